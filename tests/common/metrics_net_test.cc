#include <httplib.h>

#include "common/metrics/metrics.h"
#include "common/net/grpc_metrics.h"
#include "common/net/identity.h"
#include "common/net/servers.h"
#include "fedge/v1/fleet.grpc.pb.h"
#include "fedge/v1/inference.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"

namespace fedge {
namespace {

using metrics::Kind;

TEST(MetricsTest, NamingRulesFollowPrometheusConventions) {
  EXPECT_TRUE(metrics::CheckName("fedge_cloud_updates_total", Kind::kCounter).ok());
  EXPECT_FALSE(metrics::CheckName("fedge_cloud_updates", Kind::kCounter).ok());
  EXPECT_FALSE(metrics::CheckName("cloud_updates_total", Kind::kCounter).ok());
  EXPECT_FALSE(metrics::CheckName("fedge_Cloud_total", Kind::kCounter).ok());
  EXPECT_TRUE(metrics::CheckName("fedge_round_duration_seconds", Kind::kHistogram).ok());
  EXPECT_TRUE(metrics::CheckName("fedge_upload_size_bytes", Kind::kHistogram).ok());
  EXPECT_FALSE(metrics::CheckName("fedge_round_duration_ms", Kind::kHistogram).ok());
  EXPECT_TRUE(metrics::CheckName("fedge_connected_nodes", Kind::kGauge).ok());
  EXPECT_FALSE(metrics::CheckName("fedge_connected_total", Kind::kGauge).ok());
}

TEST(MetricsTest, FamiliesAreSharedByNameAndRendered) {
  auto& a = metrics::CounterFamily("fedge_test_events_total", "Events seen by this test.");
  auto& b = metrics::CounterFamily("fedge_test_events_total", "Events seen by this test.");
  EXPECT_EQ(&a, &b);
  a.Add({{"kind", "x"}}).Increment(3);
  const std::string text = metrics::RenderText();
  EXPECT_NE(text.find("fedge_test_events_total{kind=\"x\"} 3"), std::string::npos) << text;
}

TEST(GrpcMetricsTest, ShortMethodNamesKeepTheServiceAndMethod) {
  EXPECT_EQ(net::ShortMethodName("/fedge.v1.Fleet/UploadUpdate"), "Fleet.UploadUpdate");
  EXPECT_EQ(net::ShortMethodName("/Health/Check"), "Health.Check");
  EXPECT_EQ(net::ShortMethodName("noslash"), "noslash");
}

// The count of one series in the Prometheus text, or -1 if it is not there.
double SeriesValue(const std::string& text, const std::string& series) {
  const size_t at = text.find(series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 1));
}

TEST(GrpcMetricsTest, CallsAreCountedByMethodAndCodeWithABoundedMethodLabel) {
  // Every method of this service answers UNIMPLEMENTED (the generated base class).
  v1::Inference::Service inference;
  net::GrpcServerOptions opts;
  opts.services = {{&inference, v1::Inference::service_full_name()}};
  opts.metrics_prefix = "fedge_test";
  auto server = net::StartGrpcServer(opts);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = net::MakeChannel("127.0.0.1:" + std::to_string(server->port));

  const std::string before = metrics::RenderText();
  // Every method of the service starts with an OK series at zero.
  EXPECT_EQ(SeriesValue(before,
                        "fedge_test_grpc_requests_total{code=\"OK\",method=\"Inference.Predict\"}"),
            0)
      << before;
  auto stub = v1::Inference::NewStub(channel);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    v1::PredictResponse resp;
    EXPECT_EQ(stub->Predict(&ctx, v1::PredictRequest(), &resp).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }
  // A method this server does not serve is refused by gRPC and never becomes its own label.
  auto fleet = v1::Fleet::NewStub(channel);
  {
    grpc::ClientContext ctx;
    v1::UploadOffsetResponse resp;
    EXPECT_EQ(fleet->UploadOffset(&ctx, v1::UploadOffsetRequest(), &resp).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }
  const std::string text = metrics::RenderText();
  EXPECT_EQ(SeriesValue(text,
                        "fedge_test_grpc_requests_total{code=\"UNIMPLEMENTED\","
                        "method=\"Inference.Predict\"}"),
            3)
      << text;
  EXPECT_EQ(SeriesValue(text,
                        "fedge_test_grpc_request_duration_seconds_count{"
                        "method=\"Inference.Predict\"}"),
            3)
      << text;
  EXPECT_EQ(text.find("method=\"Fleet."), std::string::npos) << text;
  net::StopGrpcServer(&*server, std::chrono::milliseconds(100));
}

TEST(HttpServerTest, ServesMetricsAndHealthOnAnEphemeralPort) {
  metrics::GaugeFamily("fedge_test_level", "A level set by this test.").Add({}).Set(42);
  bool healthy = true;
  auto server = net::HttpServer::Start("127.0.0.1", 0, [&healthy] { return healthy; });
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  httplib::Client client("127.0.0.1", (*server)->port());
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->body.find("fedge_test_level 42"), std::string::npos);
  EXPECT_EQ(client.Get("/healthz")->status, 200);
  healthy = false;
  EXPECT_EQ(client.Get("/healthz")->status, 503);
  (*server)->Stop();
}

TEST(NetTest, NodeIdsAndAddressesAreValidated) {
  EXPECT_TRUE(net::ValidateNodeId("plant-3.gw_1").ok());
  EXPECT_FALSE(net::ValidateNodeId("").ok());
  EXPECT_FALSE(net::ValidateNodeId("-lead").ok());
  EXPECT_FALSE(net::ValidateNodeId("has space").ok());
  EXPECT_FALSE(net::ValidateNodeId(std::string(65, 'a')).ok());
  std::string host;
  int port = -1;
  ASSERT_TRUE(net::ParseHostPort("127.0.0.1:0", &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 0);
  EXPECT_FALSE(net::ParseHostPort("localhost", &host, &port).ok());
  EXPECT_FALSE(net::ParseHostPort("h:99999", &host, &port).ok());
  EXPECT_FALSE(net::ParseHostPort("h:x", &host, &port).ok());
}

TEST(NetTest, AnInvalidNodeIdIsQuotedShortAndEscapedNeverWhole) {
  // A 1 MiB id with a forged log line in it.
  const std::string hostile = "gw\nE1207 forged line" + std::string(1 << 20, 'a');
  absl::Status st = net::ValidateNodeId(hostile);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(st.message().size(), 400u);
  EXPECT_EQ(st.message().find('\n'), std::string::npos);
  EXPECT_NE(st.message().find("\"gw\\nE1207 forged line"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("(1048596 bytes)"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace fedge
