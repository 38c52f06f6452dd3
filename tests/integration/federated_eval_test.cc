// Federated evaluation in the validation gate: three real edges score a version on their local
// holdouts; the pooled result equals the test's own scoring of the same holdouts.

#include "absl/strings/str_cat.h"
#include "common/data/dataset.h"
#include "common/data/synthetic.h"
#include "common/torch/model.h"
#include "edge/server/edge_node.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"

namespace fedge {
namespace {

TEST(FederatedEvalTest, TheGatePoolsTheEdgesLocalHoldouts) {
  torchlib::SetNumThreads(1);
  testing::TempDir dir;
  auto cloud = testing::TestCloud::Start(dir.path() + "/cloud", absl::Milliseconds(100));
  ASSERT_TRUE(cloud.ok()) << cloud.status();
  std::vector<std::unique_ptr<edge::EdgeNode>> edges;
  constexpr int kSamples = 300;
  for (int i = 0; i < 3; ++i) {
    edge::EdgeNode::Options o;
    o.node_id = absl::StrCat("edge-", i);
    o.cloud_address = cloud->fleet_address();
    o.state_dir = absl::StrCat(dir.path(), "/edge", i);
    o.inference_address = "127.0.0.1:0";
    o.metrics_address = "127.0.0.1:0";
    o.synthetic_site = i;
    o.synthetic_samples = kSamples;
    o.initial_backoff = absl::Milliseconds(20);
    auto node = edge::EdgeNode::Start(o);
    ASSERT_TRUE(node.ok()) << node.status();
    edges.push_back(std::move(*node));
  }
  for (int i = 0; i < 500; ++i) {
    bool all = true;
    for (auto& e : edges) all = all && e->connected();
    if (all) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  v1::Admin::Stub* admin = cloud->admin.get();
  auto version = testing::Register(admin, testing::SyntheticModelHeader("m"));
  ASSERT_TRUE(version.ok()) << version.status();

  v1::ValidateVersionRequest req;
  req.set_model("m");
  req.set_version(1);
  req.mutable_policy()->set_federated(true);
  req.mutable_policy()->set_federated_min_nodes(3);
  req.mutable_policy()->set_min_accuracy(0.99);  // an untrained model fails it
  v1::Version validated;
  auto ctx = testing::Context("", absl::Seconds(60));
  grpc::Status st = admin->ValidateVersion(ctx.get(), req, &validated);
  ASSERT_TRUE(st.ok()) << st.error_message();
  const v1::Validation& v = validated.validation();
  EXPECT_EQ(v.federated_nodes(), 3);
  EXPECT_EQ(v.source(), "federated");
  EXPECT_FALSE(v.passed());
  EXPECT_NE(v.reason().find("federated accuracy"), std::string::npos) << v.reason();

  // The same scoring, done here on the same local holdouts.
  auto archive = testing::DownloadVersion(admin, "m", 1);
  ASSERT_TRUE(archive.ok());
  auto model = torchlib::Model::Load(*archive);
  ASSERT_TRUE(model.ok());
  double correct = 0;
  int64_t samples = 0;
  for (int i = 0; i < 3; ++i) {
    data::Dataset all = data::GenerateSite({}, i, kSamples), train, holdout;
    data::Split(all, 0.2, 0, &train, &holdout);
    auto eval = (*model)->Evaluate(holdout);
    ASSERT_TRUE(eval.ok());
    correct += std::llround(eval->accuracy * eval->num_samples);
    samples += eval->num_samples;
  }
  EXPECT_EQ(v.federated_samples(), samples);
  EXPECT_DOUBLE_EQ(v.federated_accuracy(), correct / samples);

  for (auto& e : edges) e->Shutdown();
  cloud->server->Shutdown();
}

}  // namespace
}  // namespace fedge
