// Why the robust rules exist: four honest edges train the synthetic task while a fifth,
// Byzantine, node answers every task with the round's model sign-flipped and scaled
// (delta = -10·w, so a plain mean moves the model to about -w). FedAvg's model collapses; the
// coordinate-wise median and Krum keep learning.

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tensor/flat.h"
#include "common/torch/model.h"
#include "edge/server/edge_node.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "fedge/v1/fleet.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"
#include "tests/testing/test_edges.h"

namespace fedge {
namespace {

absl::StatusOr<std::string> DownloadModel(v1::Fleet::Stub* stub, const std::string& node,
                                          const std::string& sha) {
  auto ctx = testing::Context(node);
  v1::DownloadRequest req;
  req.set_sha256(sha);
  auto reader = stub->DownloadModel(ctx.get(), req);
  std::string bytes;
  v1::Chunk chunk;
  while (reader->Read(&chunk)) bytes += chunk.data();
  grpc::Status st = reader->Finish();
  if (!st.ok()) return absl::UnavailableError(st.error_message());
  return bytes;
}

struct Outcome {
  double initial = 0;
  double final_accuracy = 0;
};

Outcome TrainUnderAttack(const std::string& rule) {
  torchlib::SetNumThreads(1);
  testing::TempDir dir;
  auto cloud = testing::TestCloud::Start(dir.path() + "/cloud", absl::Milliseconds(200));
  EXPECT_TRUE(cloud.ok()) << cloud.status();
  if (!cloud.ok()) return {};
  std::vector<std::unique_ptr<edge::EdgeNode>> edges;
  for (int i = 0; i < 4; ++i) {
    edges.push_back(testing::StartTestEdge(cloud->fleet_address(),
                                           absl::StrCat(dir.path(), "/edge", i),
                                           absl::StrCat("honest-", i), i, 400));
  }
  testing::FakeEdge mallory(cloud->fleet_channel, "mallory");
  std::thread attacker([&mallory] {
    while (true) {
      auto task = mallory.NextTask();
      if (!task.ok()) return;
      auto archive = DownloadModel(mallory.stub(), "mallory", task->base_sha256());
      if (!archive.ok()) continue;
      auto model = torchlib::Model::Load(*archive);
      if (!model.ok()) continue;
      std::vector<float> delta = (*model)->Flat();
      for (float& v : delta) v *= -10.0f;
      // It claims as many samples as an honest node holds.
      testing::SendUpdate(mallory.stub(), "mallory", *task, delta, 400);
    }
  });

  v1::Admin::Stub* admin = cloud->admin.get();
  EXPECT_TRUE(testing::Register(admin, testing::SyntheticModelHeader("m")).ok());
  EXPECT_TRUE(testing::WaitUntil([&] {
    v1::ListNodesResponse nodes;
    auto ctx = testing::Context();
    admin->ListNodes(ctx.get(), {}, &nodes);
    return nodes.nodes_size() == 5;
  }));
  v1::StartJobRequest req;
  v1::JobSpec* spec = req.mutable_spec();
  spec->set_model("m");
  spec->set_rounds(4);
  spec->set_min_clients(5);
  spec->set_local_epochs(2);
  spec->set_learning_rate(0.05);
  spec->set_round_timeout_ms(60000);
  spec->mutable_aggregation()->set_rule(rule);
  if (rule == "krum") spec->mutable_aggregation()->set_byzantine(1);
  spec->mutable_holdout()->mutable_synthetic()->set_samples_per_site(300);
  v1::Job job;
  auto ctx = testing::Context();
  grpc::Status st = admin->StartJob(ctx.get(), req, &job);
  EXPECT_TRUE(st.ok()) << st.error_message();
  auto done = testing::WaitForJob(admin, job.id(), absl::Seconds(200));
  EXPECT_TRUE(done.ok()) << done.status();
  Outcome out;
  if (done.ok()) {
    EXPECT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->error();
    for (const auto& r : done->rounds()) {
      EXPECT_EQ(r.participants(), 5) << "round " << r.round();  // mallory was heard every round
    }
    out.initial = done->initial_val_accuracy();
    if (done->rounds_size() > 0) {
      out.final_accuracy = done->rounds(done->rounds_size() - 1).val_accuracy();
    }
  }
  mallory.Cancel();
  attacker.join();
  mallory.Close();
  edges.clear();
  cloud->server->Shutdown();
  return out;
}

TEST(ByzantineTest, RobustRulesKeepLearningWhileFedAvgCollapses) {
  const Outcome fedavg = TrainUnderAttack("fedavg");
  const Outcome median = TrainUnderAttack("median");
  const Outcome krum = TrainUnderAttack("krum");
  RecordProperty("fedavg_accuracy", std::to_string(fedavg.final_accuracy));
  RecordProperty("median_accuracy", std::to_string(median.final_accuracy));
  RecordProperty("krum_accuracy", std::to_string(krum.final_accuracy));
  // Five classes: chance is 0.2. The honest edges alone reach about 0.9 in four rounds.
  EXPECT_GT(median.final_accuracy, median.initial + 0.25);
  EXPECT_GT(krum.final_accuracy, krum.initial + 0.25);
  EXPECT_LT(fedavg.final_accuracy, median.final_accuracy - 0.25);
  EXPECT_LT(fedavg.final_accuracy, krum.final_accuracy - 0.25);
}

}  // namespace
}  // namespace fedge
