// Drift end to end over real gRPC: an edge serving a deployed version watches its live inputs
// against its own training data. Rows from the same plant raise nothing; rows from the same
// plant after a sensor recalibration (the generator's drift knob) become a drift.detected
// event at the cloud, naming the node and the drifted sensors.

#include "absl/strings/str_cat.h"
#include "common/data/synthetic.h"
#include "common/net/servers.h"
#include "edge/server/edge_node.h"
#include "fedge/v1/inference.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"

namespace fedge {
namespace {

std::vector<v1::Event> DriftEvents(v1::Admin::Stub* admin) {
  v1::WatchEventsRequest req;
  req.add_types("drift.");
  req.set_limit(100);
  v1::ListEventsResponse resp;
  auto ctx = testing::Context();
  EXPECT_TRUE(admin->ListEvents(ctx.get(), req, &resp).ok());
  return {resp.events().begin(), resp.events().end()};
}

TEST(DriftDetectionTest, ShiftedSensorsBecomeADriftEventStableOnesDoNot) {
  testing::TempDir dir;
  auto cloud = testing::TestCloud::Start(dir.path() + "/cloud", absl::Milliseconds(100));
  ASSERT_TRUE(cloud.ok()) << cloud.status();
  std::vector<std::unique_ptr<edge::EdgeNode>> edges;
  for (int i = 0; i < 2; ++i) {
    edge::EdgeNode::Options o;
    o.node_id = absl::StrCat("plant-", i);
    o.cloud_address = cloud->fleet_address();
    o.state_dir = absl::StrCat(dir.path(), "/edge", i);
    o.inference_address = "127.0.0.1:0";
    o.metrics_address = "127.0.0.1:0";
    o.synthetic_site = 0;  // both run plant 0's data
    o.synthetic_samples = 2500;
    o.drift_window = 250;
    o.initial_backoff = absl::Milliseconds(20);
    auto node = edge::EdgeNode::Start(o);
    ASSERT_TRUE(node.ok()) << node.status();
    edges.push_back(std::move(*node));
  }
  v1::Admin::Stub* admin = cloud->admin.get();
  ASSERT_TRUE(testing::Register(admin, testing::SyntheticModelHeader("m")).ok());
  for (int i = 0; i < 500 && (!edges[0]->connected() || !edges[1]->connected()); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  v1::DeployRequest deploy;
  deploy.set_model("m");
  v1::DeployResponse deployed;
  auto dctx = testing::Context();
  ASSERT_TRUE(admin->Deploy(dctx.get(), deploy, &deployed).ok());
  for (int i = 0; i < 500; ++i) {
    if (edges[0]->ActiveVersions().count("m") && edges[1]->ActiveVersions().count("m")) break;
    absl::SleepFor(absl::Milliseconds(10));
  }

  // plant-0 sees its usual data; plant-1 sees the same plant after a recalibration.
  for (int e = 0; e < 2; ++e) {
    data::SyntheticOptions syn;
    syn.drift = e == 0 ? 0.0 : 1.5;
    const data::Dataset rows = data::GenerateSite(syn, 0, 1500, /*stream=*/7);
    auto stub = v1::Inference::NewStub(
        net::MakeChannel(absl::StrCat("127.0.0.1:", edges[static_cast<size_t>(e)]->inference_port())));
    const int64_t f = rows.num_features();
    for (int64_t start = 0; start < rows.size(); start += 100) {
      v1::PredictBatchRequest req;
      for (int64_t r = start; r < std::min<int64_t>(start + 100, rows.size()); ++r) {
        req.add_instances()->mutable_features()->Add(rows.features.begin() + r * f,
                                                     rows.features.begin() + (r + 1) * f);
      }
      v1::PredictBatchResponse resp;
      auto ctx = testing::Context();
      ASSERT_TRUE(stub->PredictBatch(ctx.get(), req, &resp).ok());
    }
  }
  std::vector<v1::Event> events;
  for (int i = 0; i < 300; ++i) {
    events = DriftEvents(admin);
    if (!events.empty()) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_FALSE(events.empty()) << "no drift.detected event";
  for (const auto& e : events) {
    EXPECT_EQ(e.type(), "drift.detected");
    EXPECT_EQ(e.node_id(), "plant-1") << e.message();  // never the stable plant
    EXPECT_EQ(e.model(), "m");
  }
  // The drift knob moves vibration, bearing temperature, pressure and acoustic level.
  EXPECT_NE(events[0].message().find("bearing_temp"), std::string::npos) << events[0].message();
  for (auto& e : edges) e->Shutdown();
  cloud->server->Shutdown();
}

}  // namespace
}  // namespace fedge
