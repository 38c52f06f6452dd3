// A cloud and three edges in one process, over loopback gRPC on port 0. The test captures each
// update as the edges send it, averages them itself in float64, and checks the registered
// version — read back with torch::jit::load, not through fedge's own model code — against it.

#include <torch/script.h>

#include <map>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cloud/server/cloud_server.h"
#include "common/net/servers.h"
#include "common/sync/mutex.h"
#include "common/torch/model.h"
#include "edge/server/edge_node.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "fedge/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"

namespace fedge {
namespace {


// Flat parameters then float buffers, read with LibTorch directly.
std::vector<double> TorchFlat(const std::string& archive) {
  std::istringstream in(archive);
  torch::jit::Module m = torch::jit::load(in);
  std::vector<double> out;
  auto append = [&](const at::Tensor& t) {
    at::Tensor c = t.detach().to(at::kDouble).contiguous().view({-1});
    const double* p = c.data_ptr<double>();
    out.insert(out.end(), p, p + c.numel());
  };
  for (const auto& p : m.named_parameters(/*recurse=*/true)) append(p.value);
  for (const auto& b : m.named_buffers(/*recurse=*/true)) {
    if (b.value.is_floating_point()) append(b.value);
  }
  return out;
}

struct Captured {
  int64_t num_samples;
  FlatTensor delta;
};

TEST(FederatedLoopTest, RegisteredVersionEqualsSampleWeightedMeanOfCapturedUpdates) {
  torchlib::SetNumThreads(1);
  testing::TempDir dir;
  auto cloud = testing::TestCloud::Start(dir.path() + "/cloud", absl::Milliseconds(200));
  ASSERT_TRUE(cloud.ok()) << cloud.status();

  Mutex mu;
  std::map<int, std::vector<Captured>> sent;  // round -> updates
  std::vector<std::unique_ptr<edge::EdgeNode>> edges;
  for (int i = 0; i < 3; ++i) {
    edge::EdgeNode::Options o;
    o.node_id = absl::StrCat("edge-", i);
    o.cloud_address = cloud->fleet_address();
    o.state_dir = absl::StrCat(dir.path(), "/edge", i);
    o.inference_address = "127.0.0.1:0";
    o.insecure = true;
    o.metrics_address = "127.0.0.1:0";
    o.synthetic_site = i;
    o.synthetic_samples = 300 + 100 * i;  // unequal, so the weights matter
    o.initial_backoff = absl::Milliseconds(20);
    o.on_update_sent = [&mu, &sent](const v1::UpdateHeader& h, const FlatTensor& delta) {
      MutexLock lock(&mu);
      sent[h.round()].push_back({h.num_samples(), delta});
    };
    auto node = edge::EdgeNode::Start(o);
    ASSERT_TRUE(node.ok()) << node.status();
    edges.push_back(std::move(*node));
  }

  v1::Admin::Stub* admin = cloud->admin.get();
  auto base = testing::Register(admin, testing::SyntheticModelHeader("loop"));
  ASSERT_TRUE(base.ok()) << base.status();

  v1::StartJobRequest req;
  req.mutable_spec()->set_model("loop");
  req.mutable_spec()->set_rounds(3);
  req.mutable_spec()->set_min_clients(3);
  req.mutable_spec()->set_clients_per_round(3);
  req.mutable_spec()->set_learning_rate(0.05);
  req.mutable_spec()->set_round_timeout_ms(60000);
  req.mutable_spec()->set_wait_for_clients_ms(20000);
  req.mutable_spec()->mutable_holdout()->mutable_synthetic()->set_samples_per_site(500);
  v1::Job job;
  auto ctx = testing::Context();
  ASSERT_TRUE(admin->StartJob(ctx.get(), req, &job).ok());
  auto done = testing::WaitForJob(admin, job.id(), absl::Seconds(90));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->error();
  EXPECT_EQ(done->completed_rounds(), 3);
  EXPECT_EQ(done->result_version(), 2);

  // The expected global model, computed here in float64.
  auto base_archive = testing::DownloadVersion(admin, "loop", 1);
  ASSERT_TRUE(base_archive.ok());
  std::vector<double> expected = TorchFlat(*base_archive);
  {
    MutexLock lock(&mu);
    ASSERT_EQ(sent.size(), 3u);
    for (const auto& [round, updates] : sent) {
      ASSERT_EQ(updates.size(), 3u) << "round " << round;
      double total = 0;
      std::vector<double> sum(expected.size(), 0.0);
      for (const auto& u : updates) {
        ASSERT_EQ(u.delta.size(), expected.size());
        total += static_cast<double>(u.num_samples);
        for (size_t i = 0; i < sum.size(); ++i) sum[i] += u.num_samples * double{u.delta[i]};
      }
      for (size_t i = 0; i < sum.size(); ++i) expected[i] += sum[i] / total;
    }
  }
  auto result_archive = testing::DownloadVersion(admin, "loop", 2);
  ASSERT_TRUE(result_archive.ok());
  std::vector<double> got = TorchFlat(*result_archive);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], expected[i], 1e-5 * std::abs(expected[i]) + 1e-7) << "element " << i;
  }

  // The registry recorded the lineage.
  v1::GetVersionRequest vreq;
  vreq.set_model("loop");
  vreq.set_version(2);
  v1::Version v2;
  auto vctx = testing::Context();
  ASSERT_TRUE(admin->GetVersion(vctx.get(), vreq, &v2).ok());
  EXPECT_EQ(v2.parent_version(), 1);
  EXPECT_EQ(v2.job_id(), job.id());
  EXPECT_EQ(v2.round(), 3);
  EXPECT_EQ(v2.participants_size(), 3);
  int64_t samples = 0;
  for (const auto& p : v2.participants()) samples += p.num_samples();
  int64_t local = 0;
  for (const auto& e : edges) local += e->train_samples();
  EXPECT_EQ(samples, local);  // each node's samples per round, not summed over the 3 rounds
  EXPECT_GT(v2.metrics().at("val_accuracy"), done->initial_val_accuracy());

  // Deploy it and have an edge answer a Predict with it.
  v1::DeployRequest dreq;
  dreq.set_model("loop");
  v1::DeployResponse dresp;
  auto dctx = testing::Context();
  ASSERT_TRUE(admin->Deploy(dctx.get(), dreq, &dresp).ok());
  EXPECT_EQ(dresp.node_ids_size(), 3);
  for (int i = 0; i < 200 && edges[0]->ActiveVersions().count("loop") == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(edges[0]->ActiveVersions().count("loop"), 1u);
  EXPECT_EQ(edges[0]->ActiveVersions().at("loop").version(), 2);
  auto inference = v1::Inference::NewStub(
      net::MakeChannel(absl::StrCat("127.0.0.1:", edges[0]->inference_port())));
  v1::PredictRequest preq;
  for (int f = 0; f < 12; ++f) preq.mutable_instance()->add_features(0.5f * f);
  v1::PredictResponse presp;
  auto pctx = testing::Context();
  ASSERT_TRUE(inference->Predict(pctx.get(), preq, &presp).ok());
  EXPECT_EQ(presp.version().version(), 2);
  double psum = 0;
  for (float p : presp.prediction().probabilities()) psum += p;
  EXPECT_NEAR(psum, 1.0, 1e-5);

  for (auto& e : edges) e->Shutdown();
  cloud->server->Shutdown();
}

}  // namespace
}  // namespace fedge
