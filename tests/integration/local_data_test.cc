// The edge's own data plane with a real cloud over loopback: samples ingested at an edge are
// trained on by the next federated round, survive a restart, and become the drift reference of
// the next version the edge activates.

#include "absl/strings/str_cat.h"
#include "common/data/synthetic.h"
#include "common/sync/mutex.h"
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

absl::StatusOr<v1::Job> RunOneRound(v1::Admin::Stub* admin, const std::string& model) {
  v1::StartJobRequest req;
  req.mutable_spec()->set_model(model);
  req.mutable_spec()->set_rounds(1);
  req.mutable_spec()->set_min_clients(1);
  req.mutable_spec()->set_learning_rate(0.05);
  req.mutable_spec()->set_round_timeout_ms(60000);
  req.mutable_spec()->set_wait_for_clients_ms(20000);
  v1::Job job;
  auto ctx = testing::Context();
  grpc::Status st = admin->StartJob(ctx.get(), req, &job);
  if (!st.ok()) return absl::InternalError(st.error_message());
  return testing::WaitForJob(admin, job.id(), absl::Seconds(60));
}

TEST(LocalDataTest, FineTuningTrainsOnTheBaseDataPlusIngestedSamples) {
  testing::TempDir dir;
  auto cloud = testing::TestCloud::Start(dir.path() + "/cloud", absl::Milliseconds(100));
  ASSERT_TRUE(cloud.ok()) << cloud.status();
  Mutex mu;
  std::vector<int64_t> sent;  // num_samples of each update
  auto start = [&] {
    return testing::StartTestEdge(cloud->fleet_address(), dir.path() + "/edge", "plant-0",
                                  /*site=*/0, /*samples=*/10, [&](edge::EdgeNode::Options* o) {
                                    o->on_update_sent = [&](const v1::UpdateHeader& h,
                                                            const FlatTensor&) {
                                      MutexLock lock(&mu);
                                      sent.push_back(h.num_samples());
                                    };
                                  });
  };
  auto edge = start();
  ASSERT_NE(edge, nullptr);
  const int64_t base = edge->train_samples();
  EXPECT_EQ(base, 8);  // 10 rows, 20% held out

  // Labelled rows of another plant arrive through Ingest.
  const data::Dataset gathered = data::GenerateSite({}, 1, 400, /*stream=*/5);
  ASSERT_TRUE(testing::IngestAll(edge->inference_port(), gathered));
  EXPECT_EQ(edge->samples_stored(), 400);
  EXPECT_EQ(edge->samples_total(), 400);

  v1::Admin::Stub* admin = cloud->admin.get();
  ASSERT_TRUE(testing::Register(admin, testing::SyntheticModelHeader("m")).ok());
  ASSERT_TRUE(testing::WaitUntil([&] { return edge->connected(); }));
  auto job = RunOneRound(admin, "m");
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), v1::JOB_SUCCEEDED) << job->error();
  {
    MutexLock lock(&mu);
    EXPECT_EQ(sent, (std::vector<int64_t>{base + 400}));
  }

  // After a restart the samples are still there, and still trained on.
  edge->Shutdown();
  edge.reset();
  edge = start();
  ASSERT_NE(edge, nullptr);
  EXPECT_EQ(edge->samples_stored(), 400);
  EXPECT_EQ(edge->samples_total(), 400);
  ASSERT_TRUE(testing::WaitUntil([&] { return edge->connected(); }));
  job = RunOneRound(admin, "m");
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), v1::JOB_SUCCEEDED) << job->error();
  {
    MutexLock lock(&mu);
    EXPECT_EQ(sent, (std::vector<int64_t>{base + 400, base + 400}));
  }
  edge->Shutdown();
  cloud->server->Shutdown();
}

TEST(LocalDataTest, ANewVersionsDriftReferenceIsTheEdgesRecentSamples) {
  testing::TempDir dir;
  auto cloud = testing::TestCloud::Start(dir.path() + "/cloud", absl::Milliseconds(100));
  ASSERT_TRUE(cloud.ok()) << cloud.status();
  // Both edges run plant 0. "adapted" has gathered labelled samples since its sensors were
  // recalibrated; "control" has only its original data.
  std::vector<std::unique_ptr<edge::EdgeNode>> edges;
  for (const std::string id : {"control", "adapted"}) {
    edges.push_back(testing::StartTestEdge(cloud->fleet_address(), dir.path() + "/" + id, id,
                                           /*site=*/0, /*samples=*/1000,
                                           [](edge::EdgeNode::Options* o) {
                                             o->drift_window = 250;
                                             o->reference_rows = 500;
                                           }));
    ASSERT_NE(edges.back(), nullptr);
  }
  data::SyntheticOptions drifted;
  drifted.drift = 1.5;
  ASSERT_TRUE(
      testing::IngestAll(edges[1]->inference_port(), data::GenerateSite(drifted, 0, 600, 3)));

  v1::Admin::Stub* admin = cloud->admin.get();
  ASSERT_TRUE(testing::Register(admin, testing::SyntheticModelHeader("m")).ok());
  ASSERT_TRUE(testing::DeployEverywhere(admin, "m", edges));

  // Both now see recalibrated sensors.
  for (auto& e : edges) {
    ASSERT_TRUE(testing::PredictAll(e->inference_port(), data::GenerateSite(drifted, 0, 1500, 7)));
  }
  // The control edge's reference is its old data: the shift is a drift there.
  std::vector<v1::Event> events;
  ASSERT_TRUE(testing::WaitUntil([&] {
    events = DriftEvents(admin);
    return !events.empty();
  })) << "the control edge reported no drift";
  // Give the adapted edge's reports, if any, a few heartbeats to arrive.
  absl::SleepFor(absl::Milliseconds(600));
  events = DriftEvents(admin);
  for (const auto& e : events) EXPECT_EQ(e.node_id(), "control") << e.message();
  for (auto& e : edges) e->Shutdown();
  cloud->server->Shutdown();
}

}  // namespace
}  // namespace fedge

namespace fedge {
namespace {

// Data arrival over real edges: labelled samples ingested at two edges are reported to the
// cloud, and once the fleet has taken min_new_samples since the policy's baseline a retraining
// job starts, recording the count as its cause.
TEST(LocalDataTest, IngestedSamplesFleetWideStartRetraining) {
  testing::TempDir dir;
  auto cloud = testing::TestCloud::Start(dir.path() + "/cloud", absl::Milliseconds(100));
  ASSERT_TRUE(cloud.ok()) << cloud.status();
  v1::Admin::Stub* admin = cloud->admin.get();
  std::vector<std::unique_ptr<edge::EdgeNode>> edges;
  for (int i = 0; i < 2; ++i) {
    edges.push_back(testing::StartTestEdge(cloud->fleet_address(),
                                           absl::StrCat(dir.path(), "/edge", i),
                                           absl::StrCat("plant-", i), i, 200));
    ASSERT_NE(edges.back(), nullptr);
  }
  ASSERT_TRUE(testing::Register(admin, testing::SyntheticModelHeader("m")).ok());
  ASSERT_TRUE(testing::WaitUntil([&] { return edges[0]->connected() && edges[1]->connected(); }));
  // Samples gathered before the policy exists are the baseline, not new.
  ASSERT_TRUE(testing::IngestAll(edges[0]->inference_port(), data::GenerateSite({}, 0, 500, 7)));
  absl::SleepFor(absl::Milliseconds(500));  // reported with the next heartbeats
  v1::SetRetrainPolicyRequest req;
  req.set_model("m");
  req.mutable_policy()->set_enabled(true);
  req.mutable_policy()->set_min_new_samples(300);
  req.mutable_policy()->mutable_job()->set_rounds(1);
  req.mutable_policy()->mutable_job()->set_min_clients(2);
  v1::RetrainPolicy out;
  auto pctx = testing::Context();
  ASSERT_TRUE(admin->SetRetrainPolicy(pctx.get(), req, &out).ok());
  auto jobs = [&] { return testing::ListJobs(admin); };
  absl::SleepFor(absl::Seconds(1));
  ASSERT_TRUE(jobs().empty());
  // 200 + 150 new samples at two edges: 350 >= 300.
  ASSERT_TRUE(testing::IngestAll(edges[0]->inference_port(), data::GenerateSite({}, 0, 200, 8)));
  absl::SleepFor(absl::Seconds(1));
  ASSERT_TRUE(jobs().empty()) << "200 new samples are not enough";
  ASSERT_TRUE(testing::IngestAll(edges[1]->inference_port(), data::GenerateSite({}, 1, 150, 9)));
  ASSERT_TRUE(testing::WaitUntil([&] { return !jobs().empty(); }));
  const auto started = jobs();
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0].spec().trigger(),
            "data: 350 new labelled samples across the fleet since the latest version");
  auto done = testing::WaitForJob(admin, started[0].id(), absl::Seconds(60));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->error();
  for (auto& e : edges) e->Shutdown();
  cloud->server->Shutdown();
}

}  // namespace
}  // namespace fedge
