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
#include "tests/testing/test_edges.h"

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
    edges.push_back(testing::StartTestEdge(cloud->fleet_address(),
                                           absl::StrCat(dir.path(), "/edge", i),
                                           absl::StrCat("edge-", i), i, kSamples));
    ASSERT_NE(edges.back(), nullptr);
  }
  ASSERT_TRUE(testing::WaitUntil([&] {
    for (auto& e : edges) {
      if (!e->connected()) return false;
    }
    return true;
  }));
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
