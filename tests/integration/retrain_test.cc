// Trigger to rollout: drift reported by two of three real edges meets the model's quorum and
// starts exactly one retraining job (more drift keeps arriving; debounce and cooldown hold).
// Its result passes the gate, rolls out on its own, and is promoted to production.

#include "absl/strings/str_cat.h"
#include "common/data/synthetic.h"
#include "edge/server/edge_node.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"
#include "tests/testing/test_edges.h"

namespace fedge {
namespace {

void SendDriftedTraffic(int port, uint64_t stream) {
  data::SyntheticOptions syn;
  syn.drift = 1.5;
  ASSERT_TRUE(testing::PredictAll(port, data::GenerateSite(syn, 0, 600, stream)));
}

TEST(RetrainTest, ADriftQuorumStartsOneJobWhoseVersionIsGatedRolledOutAndPromoted) {
  testing::TempDir dir;
  auto cloud = testing::TestCloud::Start(dir.path() + "/cloud", absl::Milliseconds(100));
  ASSERT_TRUE(cloud.ok()) << cloud.status();
  v1::Admin::Stub* admin = cloud->admin.get();
  std::vector<std::unique_ptr<edge::EdgeNode>> edges;
  for (int i = 0; i < 3; ++i) {
    edges.push_back(testing::StartTestEdge(
        cloud->fleet_address(), absl::StrCat(dir.path(), "/edge", i), absl::StrCat("plant-", i),
        /*site=*/0, /*samples=*/1000, [](edge::EdgeNode::Options* o) { o->drift_window = 200; }));
    ASSERT_NE(edges.back(), nullptr);
  }
  ASSERT_TRUE(testing::Register(admin, testing::SyntheticModelHeader("m")).ok());
  {
    v1::UpdateModelRequest req;
    req.set_name("m");
    req.mutable_gate_policy()->set_min_accuracy(0.5);
    req.mutable_gate_policy()->mutable_holdout()->mutable_synthetic()->set_samples_per_site(500);
    v1::Model out;
    auto ctx = testing::Context();
    ASSERT_TRUE(admin->UpdateModel(ctx.get(), req, &out).ok());
  }
  ASSERT_TRUE(testing::DeployEverywhere(admin, "m", edges));
  {
    v1::SetRetrainPolicyRequest req;
    req.set_model("m");
    v1::RetrainPolicy* p = req.mutable_policy();
    p->set_enabled(true);
    p->set_drift_quorum_nodes(2);
    p->set_drift_window_ms(60000);
    p->set_cooldown_ms(600000);
    p->mutable_job()->set_rounds(3);
    p->mutable_job()->set_min_clients(3);
    p->mutable_job()->set_learning_rate(0.05);
    p->set_auto_deploy(true);
    v1::RetrainPolicy out;
    auto ctx = testing::Context();
    grpc::Status st = admin->SetRetrainPolicy(ctx.get(), req, &out);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }

  // Plants 1 and 2 see recalibrated sensors; plant 0 does not. Then more drift keeps coming.
  SendDriftedTraffic(edges[1]->inference_port(), 1);
  SendDriftedTraffic(edges[2]->inference_port(), 2);
  auto jobs = [&] { return testing::ListJobs(admin); };
  testing::WaitUntil([&] { return !jobs().empty(); });
  ASSERT_EQ(jobs().size(), 1u);
  SendDriftedTraffic(edges[1]->inference_port(), 3);
  SendDriftedTraffic(edges[2]->inference_port(), 4);
  const v1::Job job = jobs()[0];
  EXPECT_NE(job.spec().trigger().find("drift quorum"), std::string::npos) << job.spec().trigger();
  EXPECT_NE(job.spec().trigger().find("plant-1"), std::string::npos);
  EXPECT_EQ(job.spec().trigger().find("plant-0"), std::string::npos);
  auto done = testing::WaitForJob(admin, job.id(), absl::Seconds(60));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->error();

  // The result is gated, rolled out everywhere and promoted, with no person involved.
  v1::Model model;
  for (int i = 0; i < 500; ++i) {
    v1::GetModelRequest req;
    req.set_name("m");
    auto ctx = testing::Context();
    ASSERT_TRUE(admin->GetModel(ctx.get(), req, &model).ok());
    if (model.aliases().count("production")) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(model.aliases().count("production"), 1u);
  EXPECT_EQ(model.aliases().at("production"), done->result_version());
  for (auto& e : edges) EXPECT_EQ(e->ActiveVersions().at("m").version(), done->result_version());
  v1::GetVersionRequest vreq;
  vreq.set_model("m");
  vreq.set_version(done->result_version());
  v1::Version v;
  auto vctx = testing::Context();
  ASSERT_TRUE(admin->GetVersion(vctx.get(), vreq, &v).ok());
  EXPECT_TRUE(v.validation().passed());
  EXPECT_EQ(jobs().size(), 1u);  // debounce and cooldown held through the later drift

  v1::WatchEventsRequest ereq;
  ereq.add_types("retrain.");
  ereq.add_types("version.promoted");
  v1::ListEventsResponse events;
  for (int i = 0; i < 200; ++i) {  // the event follows the alias change by a moment
    events.Clear();
    auto ectx = testing::Context();
    ASSERT_TRUE(admin->ListEvents(ectx.get(), ereq, &events).ok());
    if (events.events_size() >= 2) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(events.events_size(), 2);
  EXPECT_EQ(events.events(0).type(), "retrain.triggered");
  EXPECT_EQ(events.events(1).type(), "version.promoted");
  for (auto& e : edges) e->Shutdown();
  cloud->server->Shutdown();
}

}  // namespace
}  // namespace fedge
