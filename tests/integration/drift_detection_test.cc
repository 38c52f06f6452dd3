// Drift end to end over real gRPC: an edge serving a deployed version watches its live inputs
// against its own training data. Rows from the same plant raise nothing; rows from the same
// plant after a sensor recalibration (the generator's drift knob) become a drift.detected
// event at the cloud, naming the node and the drifted sensors.

#include "absl/strings/str_cat.h"
#include "common/data/synthetic.h"
#include "edge/server/edge_node.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"
#include "tests/testing/test_edges.h"

namespace fedge {
namespace {

std::vector<v1::Event> DriftEvents(v1::Admin::Stub* admin) {
  return testing::ListEvents(admin, {"drift."});
}

TEST(DriftDetectionTest, ShiftedSensorsBecomeADriftEventStableOnesDoNot) {
  testing::TempDir dir;
  auto cloud = testing::TestCloud::Start(dir.path() + "/cloud", absl::Milliseconds(100));
  ASSERT_TRUE(cloud.ok()) << cloud.status();
  std::vector<std::unique_ptr<edge::EdgeNode>> edges;
  for (int i = 0; i < 2; ++i) {  // both run plant 0's data
    edges.push_back(testing::StartTestEdge(
        cloud->fleet_address(), absl::StrCat(dir.path(), "/edge", i), absl::StrCat("plant-", i),
        /*site=*/0, /*samples=*/2500, [](edge::EdgeNode::Options* o) { o->drift_window = 250; }));
    ASSERT_NE(edges.back(), nullptr);
  }
  v1::Admin::Stub* admin = cloud->admin.get();
  ASSERT_TRUE(testing::Register(admin, testing::SyntheticModelHeader("m")).ok());
  ASSERT_TRUE(testing::DeployEverywhere(admin, "m", edges));

  // plant-0 sees its usual data; plant-1 sees the same plant after a recalibration.
  for (int e = 0; e < 2; ++e) {
    data::SyntheticOptions syn;
    syn.drift = e == 0 ? 0.0 : 1.5;
    ASSERT_TRUE(testing::PredictAll(edges[static_cast<size_t>(e)]->inference_port(),
                                    data::GenerateSite(syn, 0, 1500, /*stream=*/7)));
  }
  std::vector<v1::Event> events;
  testing::WaitUntil([&] {
    events = DriftEvents(admin);
    return !events.empty();
  });
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
