// Per-node limits on the Fleet port: a node that calls too often is refused RESOURCE_EXHAUSTED
// while other nodes go on, and an upload stream that goes quiet is cut off, over real gRPC.

#include "cloud/api/call_limits.h"

#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "cloud/server/cloud_server.h"
#include "common/net/servers.h"
#include "fedge/v1/fleet.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fixtures.h"

namespace fedge {
namespace {

TEST(NodeRateLimiterTest, EachNodeHasItsOwnBucketThatRefillsAtTheRate) {
  testing::FakeClock clock;
  cloud::api::NodeRateLimiter::Options o;
  o.per_second = 2;
  o.burst = 3;
  o.clock = &clock;
  cloud::api::NodeRateLimiter limiter(o);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Admit("a").ok()) << i;
  absl::Status st = limiter.Admit("a");
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("node a exceeds 2 calls/s"), std::string::npos) << st;
  EXPECT_NE(st.message().find("retry in 0.5 s"), std::string::npos) << st;
  EXPECT_TRUE(limiter.Admit("b").ok());  // another node is not affected
  clock.Advance(absl::Milliseconds(499));
  EXPECT_FALSE(limiter.Admit("a").ok());
  clock.Advance(absl::Milliseconds(2));  // 0.5 s since the refusal: one token
  EXPECT_TRUE(limiter.Admit("a").ok());
  EXPECT_FALSE(limiter.Admit("a").ok());
  clock.Advance(absl::Seconds(60));  // never more than the burst
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Admit("a").ok()) << i;
  EXPECT_FALSE(limiter.Admit("a").ok());
}

TEST(NodeRateLimiterTest, TheBucketTableStaysBounded) {
  testing::FakeClock clock;
  cloud::api::NodeRateLimiter::Options o;
  o.per_second = 1;
  o.burst = 2;
  o.max_nodes = 10;
  o.clock = &clock;
  cloud::api::NodeRateLimiter limiter(o);
  // Many node ids, each used once: the table never grows past the bound, and a fresh node is
  // always admitted.
  for (int i = 0; i < 1000; ++i) {
    EXPECT_TRUE(limiter.Admit(absl::StrCat("n", i)).ok()) << i;
    EXPECT_LE(limiter.tracked(), 10u) << i;
    clock.Advance(absl::Milliseconds(1));
  }
  EXPECT_GE(limiter.tracked(), 5u);  // half is dropped at a time, not all
  // A node that is limited right now keeps its bucket (it is among the newest).
  EXPECT_TRUE(limiter.Admit("hot").ok());
  EXPECT_TRUE(limiter.Admit("hot").ok());
  EXPECT_FALSE(limiter.Admit("hot").ok());
}

class CallLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cloud::CloudServer::Options o;
    o.data_dir = dir_.path();
    o.fleet_address = "127.0.0.1:0";
    o.admin_address = "127.0.0.1:0";
    o.metrics_address = "127.0.0.1:0";
    o.rest_address = "";
    o.insecure = true;
    o.node_calls_per_second = 0.5;
    o.node_call_burst = 3;
    o.upload_idle_timeout = absl::Seconds(1);
    auto server = cloud::CloudServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    stub_ = v1::Fleet::NewStub(net::MakeChannel(absl::StrCat("127.0.0.1:", server_->fleet_port())));
  }
  void TearDown() override { server_->Shutdown(); }

  grpc::Status Offset(const std::string& node) {
    auto ctx = testing::Context(node);
    v1::UploadOffsetRequest req;
    req.set_task_id("t");
    req.set_sha256(std::string(64, 'a'));
    v1::UploadOffsetResponse resp;
    return stub_->UploadOffset(ctx.get(), req, &resp);
  }

  testing::TempDir dir_;
  std::unique_ptr<cloud::CloudServer> server_;
  std::unique_ptr<v1::Fleet::Stub> stub_;
};

TEST_F(CallLimitsTest, ANodeThatCallsTooOftenIsRefusedWhileOthersGoOn) {
  const std::string series = R"(fedge_cloud_calls_limited_total{limit="rate"})";
  const double before = testing::MetricValue(series);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(Offset("busy").ok()) << i;
  grpc::Status st = Offset("busy");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("node busy exceeds 0.5 calls/s"), std::string::npos)
      << st.error_message();
  EXPECT_TRUE(Offset("quiet").ok());
  EXPECT_EQ(testing::MetricValue(series), before + 1);
}

TEST_F(CallLimitsTest, AnUploadStreamThatGoesQuietIsCutOff) {
  const std::string series = R"(fedge_cloud_calls_limited_total{limit="idle"})";
  const double before = testing::MetricValue(series);
  auto ctx = testing::Context("slowloris", absl::Seconds(30));
  v1::UploadResponse resp;
  const auto start = std::chrono::steady_clock::now();
  auto writer = stub_->UploadUpdate(ctx.get(), &resp);
  // Opens the stream and then sends nothing, not even the header.
  grpc::Status st = writer->Finish();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::CANCELLED) << st.error_message();
  EXPECT_GE(seconds, 1.0);
  EXPECT_LT(seconds, 10.0);  // long before the client's own 30 s deadline
  EXPECT_EQ(testing::MetricValue(series), before + 1);
  // The coordinator is fine: the next call is answered.
  EXPECT_TRUE(Offset("slowloris").ok());
}

TEST(CallLimitsConfigTest, BadLimitsAreRefusedAtStartUp) {
  testing::TempDir dir;
  cloud::CloudServer::Options o;
  o.data_dir = dir.path();
  o.node_calls_per_second = 0;
  EXPECT_EQ(cloud::CloudServer::Start(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.node_calls_per_second = 1;
  o.upload_idle_timeout = absl::ZeroDuration();
  EXPECT_EQ(cloud::CloudServer::Start(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge
