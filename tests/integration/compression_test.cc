// Real edges train a job whose updates are top-k sparsified and int8-quantized: they keep the
// residual of what they left out on disk for the next round, upload a small fraction of the
// F32 bytes, and the model still learns.

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tensor/flat.h"
#include "edge/server/edge_node.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"
#include "tests/testing/test_edges.h"

namespace fedge {
namespace {

TEST(CompressionTest, TopKInt8UpdatesCarryTheirResidualAndStillLearn) {
  testing::TempDir dir;
  auto cloud = testing::TestCloud::Start(dir.path() + "/cloud", absl::Milliseconds(200));
  ASSERT_TRUE(cloud.ok()) << cloud.status();
  std::vector<std::unique_ptr<edge::EdgeNode>> edges;
  for (int i = 0; i < 3; ++i) {
    edges.push_back(testing::StartTestEdge(cloud->fleet_address(),
                                           absl::StrCat(dir.path(), "/edge", i),
                                           absl::StrCat("edge-", i), i, 400));
  }
  v1::Admin::Stub* admin = cloud->admin.get();
  auto base = testing::Register(admin, testing::SyntheticModelHeader("m"));
  ASSERT_TRUE(base.ok()) << base.status();
  const int64_t f32_bytes = Schema::FromProto(base->schema()).NumElements() * 4;
  v1::StartJobRequest req;
  v1::JobSpec* spec = req.mutable_spec();
  spec->set_model("m");
  spec->set_rounds(4);
  spec->set_min_clients(3);
  spec->set_local_epochs(2);
  spec->set_round_timeout_ms(60000);
  spec->mutable_compression()->set_encoding("topk_int8");
  spec->mutable_compression()->set_topk_fraction(0.05);
  spec->mutable_holdout()->mutable_synthetic()->set_samples_per_site(300);
  v1::Job job;
  auto ctx = testing::Context();
  ASSERT_TRUE(admin->StartJob(ctx.get(), req, &job).ok());
  auto done = testing::WaitForJob(admin, job.id(), absl::Seconds(200));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->error();
  for (const auto& r : done->rounds()) {
    EXPECT_EQ(r.participants(), 3);
    // 5% of the values, each a 4-byte index and a byte, plus block scales and a header.
    EXPECT_LT(r.bytes_up(), 3 * f32_bytes / 10) << "round " << r.round();
    EXPECT_GT(r.bytes_down(), 0);
  }
  EXPECT_GT(done->rounds(done->rounds_size() - 1).val_accuracy(),
            done->initial_val_accuracy() + 0.2);
  for (int i = 0; i < 3; ++i) {
    const std::string residual =
        absl::StrCat(dir.path(), "/edge", i, "/residuals/", job.id(), ".residual");
    EXPECT_TRUE(std::filesystem::exists(residual)) << residual;
  }
  edges.clear();
  cloud->server->Shutdown();
}

}  // namespace
}  // namespace fedge
