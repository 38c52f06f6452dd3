// Hot swap under load, over real gRPC: client threads call Predict back to back while the
// runtime swaps in 24 versions. Every request is counted, none fails, and each response names
// the version that answered it; per thread, versions only move forward.

#include <atomic>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/data/synthetic.h"
#include "common/net/servers.h"
#include "common/sync/mutex.h"
#include "common/tensor/sha256.h"
#include "common/torch/model.h"
#include "edge/runtime/runtime.h"
#include "edge/serving/health.h"
#include "edge/serving/inference_service.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace fedge {
namespace {

constexpr int kSwaps = 24;
constexpr int kThreads = 3;

std::string Archive(uint64_t seed) {
  torchlib::BuiltinOptions opt;
  opt.num_features = 12;
  opt.num_classes = 5;
  opt.hidden = {32, 16};
  opt.seed = seed;
  auto model = torchlib::Model::Builtin(opt);
  EXPECT_TRUE(model.ok());
  v1::ModelContract c;
  for (const auto& f : data::SyntheticFeatureNames({})) c.add_feature_names(f);
  for (const auto& l : data::SyntheticLabels()) c.add_labels(l);
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(c, &json);
  (*model)->SetExtraFile(torchlib::kContractFile, json);
  return *(*model)->Serialize();
}

TEST(HotSwapTest, NoPredictFailsAcrossSwapsAndEachAnswerNamesItsVersion) {
  torchlib::SetNumThreads(1);
  testing::TempDir dir;
  auto rt = edge::runtime::Runtime::Open({dir.path(), {}});
  ASSERT_TRUE(rt.ok());
  edge::serving::HealthTracker health({});
  edge::serving::InferenceService service(rt->get(), &health);
  auto server = net::StartGrpcServer({"127.0.0.1:0", {{&service, "fedge.v1.Inference"}}});
  ASSERT_TRUE(server.ok());
  auto stub = v1::Inference::NewStub(net::MakeChannel(absl::StrCat("127.0.0.1:", server->port)));

  std::vector<std::string> archives;
  for (int v = 1; v <= kSwaps + 1; ++v) archives.push_back(Archive(static_cast<uint64_t>(v)));
  auto ref = [&](int v) {
    v1::VersionRef r;
    r.set_model("m");
    r.set_version(v);
    r.set_sha256(Sha256Hex(archives[static_cast<size_t>(v - 1)]));
    return r;
  };
  ASSERT_TRUE((*rt)->Activate(ref(1), archives[0]).ok());

  std::atomic<bool> stop{false};
  std::atomic<int64_t> requests{0}, failures{0}, backwards{0};
  Mutex mu;
  std::map<int64_t, int64_t> answered_by;  // version -> responses
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&] {
      int64_t last_version = 0;
      v1::PredictRequest req;
      for (int f = 0; f < 12; ++f) req.mutable_instance()->add_features(0.1f * f);
      while (!stop) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        v1::PredictResponse resp;
        grpc::Status st = stub->Predict(&ctx, req, &resp);
        ++requests;
        if (!st.ok()) {
          ++failures;
          continue;
        }
        const int64_t v = resp.version().version();
        if (v < last_version) ++backwards;
        last_version = v;
        EXPECT_EQ(resp.version().sha256(), ref(static_cast<int>(v)).sha256());
        MutexLock lock(&mu);
        ++answered_by[v];
      }
    });
  }
  for (int v = 2; v <= kSwaps + 1; ++v) {
    // Let requests land on each version before the next swap.
    const int64_t before = requests.load();
    while (requests.load() < before + 5) absl::SleepFor(absl::Milliseconds(1));
    ASSERT_TRUE((*rt)->Activate(ref(v), archives[static_cast<size_t>(v - 1)]).ok());
  }
  const int64_t before = requests.load();
  while (requests.load() < before + 10) absl::SleepFor(absl::Milliseconds(1));
  stop = true;
  for (auto& c : clients) c.join();

  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(backwards.load(), 0);
  int64_t counted = 0;
  {
    MutexLock lock(&mu);
    for (const auto& [v, n] : answered_by) counted += n;
    EXPECT_GE(answered_by.size(), static_cast<size_t>(kSwaps / 2));  // many versions answered
    EXPECT_GT(answered_by[kSwaps + 1], 0);                          // and the last one did
  }
  EXPECT_EQ(counted, requests.load());
  // The health tracker saw every answered prediction.
  auto reports = health.Reports({{"m", ref(kSwaps + 1)}});
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_GT(reports[0].predictions(), 0);
  EXPECT_EQ(reports[0].errors(), 0);
  net::StopGrpcServer(&*server, std::chrono::seconds(1));
}

}  // namespace
}  // namespace fedge
