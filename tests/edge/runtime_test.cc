#include "edge/runtime/runtime.h"

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/data/synthetic.h"
#include "common/tensor/sha256.h"
#include "common/torch/model.h"
#include "google/protobuf/util/json_util.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace fedge::edge::runtime {
namespace {

constexpr int kFeatures = 12;

// A built-in archive with a contract, as the registry would store it.
std::string Archive(uint64_t seed, bool with_contract = true) {
  torchlib::BuiltinOptions opt;
  opt.num_features = kFeatures;
  opt.num_classes = 5;
  opt.hidden = {8};
  opt.seed = seed;
  auto model = torchlib::Model::Builtin(opt);
  EXPECT_TRUE(model.ok());
  if (with_contract) {
    v1::ModelContract c;
    for (const auto& f : data::SyntheticFeatureNames({})) c.add_feature_names(f);
    for (const auto& l : data::SyntheticLabels()) c.add_labels(l);
    std::string json;
    (void)google::protobuf::util::MessageToJsonString(c, &json);
    (*model)->SetExtraFile(torchlib::kContractFile, json);
  }
  return *(*model)->Serialize();
}

v1::VersionRef Ref(const std::string& archive, int64_t version) {
  v1::VersionRef ref;
  ref.set_model("m");
  ref.set_version(version);
  ref.set_sha256(Sha256Hex(archive));
  return ref;
}

TEST(RuntimeTest, ServesTheLastActiveVersionAfterARestartWithoutTheCloud) {
  testing::TempDir dir;
  const std::string v1 = Archive(1);
  {
    auto rt = Runtime::Open({dir.path(), {}});
    ASSERT_TRUE(rt.ok());
    EXPECT_EQ((*rt)->Active("m").status().code(), absl::StatusCode::kNotFound);
    ASSERT_TRUE((*rt)->Activate(Ref(v1, 1), v1).ok());
  }
  auto rt = Runtime::Open({dir.path(), {}});
  ASSERT_TRUE(rt.ok());
  auto active = (*rt)->Active("m");
  ASSERT_TRUE(active.ok()) << active.status();
  EXPECT_EQ((*active)->ref.version(), 1);
  EXPECT_EQ((*active)->ref.sha256(), Sha256Hex(v1));
  std::vector<float> row(kFeatures, 0.5f);
  EXPECT_TRUE((*active)->model->Predict(row, kFeatures).ok());
}

TEST(RuntimeTest, RefusesArchivesThatFailTheirDigestOrHaveNoContract) {
  testing::TempDir dir;
  auto rt = Runtime::Open({dir.path(), {}});
  ASSERT_TRUE(rt.ok());
  const std::string v1 = Archive(1), v2 = Archive(2);
  ASSERT_TRUE((*rt)->Activate(Ref(v1, 1), v1).ok());
  EXPECT_EQ((*rt)->Activate(Ref(v1, 2), v2).code(), absl::StatusCode::kInvalidArgument);
  const std::string bare = Archive(3, /*with_contract=*/false);
  EXPECT_EQ((*rt)->Activate(Ref(bare, 3), bare).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*(*rt)->Active("m"))->ref.version(), 1);  // unchanged
}

TEST(RuntimeTest, RollbackReturnsToThePreviousVersion) {
  testing::TempDir dir;
  auto rt = Runtime::Open({dir.path(), {}});
  ASSERT_TRUE(rt.ok());
  EXPECT_EQ((*rt)->Rollback("m").code(), absl::StatusCode::kFailedPrecondition);
  const std::string v1 = Archive(1), v2 = Archive(2);
  ASSERT_TRUE((*rt)->Activate(Ref(v1, 1), v1).ok());
  ASSERT_TRUE((*rt)->Activate(Ref(v2, 2), v2).ok());
  EXPECT_EQ((*(*rt)->Active("m"))->ref.version(), 2);
  ASSERT_TRUE((*rt)->Rollback("m").ok());
  EXPECT_EQ((*(*rt)->Active("m"))->ref.version(), 1);
}

TEST(RuntimeTest, ThePreviousVersionStaysLoadedForAnInstantSwapBack) {
  testing::TempDir dir;
  auto rt = Runtime::Open({dir.path(), {}});
  ASSERT_TRUE(rt.ok());
  const std::string v1 = Archive(1), v2 = Archive(2);
  ASSERT_TRUE((*rt)->Activate(Ref(v1, 1), v1).ok());
  const LoadedModel* first = (*(*rt)->Active("m")).get();
  ASSERT_TRUE((*rt)->Activate(Ref(v2, 2), v2).ok());
  EXPECT_EQ(*(*rt)->ActivatePrevious(Ref(v2, 2)), false);  // v2 is active, not previous
  ASSERT_EQ(*(*rt)->ActivatePrevious(Ref(v1, 1)), true);
  // The very same loaded instance serves again: nothing was reloaded.
  EXPECT_EQ((*(*rt)->Active("m")).get(), first);
}

TEST(RuntimeTest, NoPredictFailsWhileVersionsSwapUnderLoad) {
  testing::TempDir dir;
  auto rt = Runtime::Open({dir.path(), {}});
  ASSERT_TRUE(rt.ok());
  std::vector<std::string> archives;
  for (int i = 0; i < 6; ++i) archives.push_back(Archive(10 + i));
  ASSERT_TRUE((*rt)->Activate(Ref(archives[0], 1), archives[0]).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, calls{0};
  std::vector<std::thread> load;
  for (int t = 0; t < 3; ++t) {
    load.emplace_back([&] {
      std::vector<float> row(kFeatures, 0.25f);
      while (!stop) {
        auto active = (*rt)->Active("m");
        if (!active.ok() || !(*active)->model->Predict(row, kFeatures).ok()) ++failures;
        ++calls;
      }
    });
  }
  for (int i = 1; i < 6; ++i) {
    ASSERT_TRUE((*rt)->Activate(Ref(archives[i], i + 1), archives[i]).ok());
  }
  stop = true;
  for (auto& t : load) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_GT(calls, 0);
  EXPECT_EQ((*(*rt)->Active("m"))->ref.version(), 6);
}

TEST(RuntimeTest, CorruptedCacheIsDetectedAndRemoved) {
  testing::TempDir dir;
  auto rt = Runtime::Open({dir.path(), {}});
  ASSERT_TRUE(rt.ok());
  const std::string v1 = Archive(1);
  ASSERT_TRUE((*rt)->Activate(Ref(v1, 1), v1).ok());
  const std::string path = (*rt)->CachePath(Sha256Hex(v1));
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  EXPECT_EQ((*rt)->ReadCached(Sha256Hex(v1)).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(std::filesystem::exists(path));
  // A restart with its active version's file gone starts empty instead of crashing.
  auto again = Runtime::Open({dir.path(), {}});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->Active("m").status().code(), absl::StatusCode::kNotFound);
}

TEST(RuntimeTest, TrainRefusesAnotherSchemaOrFeatureCountAndReturnsTheDelta) {
  const std::string base = Archive(1);
  auto model = torchlib::Model::Load(base);
  ASSERT_TRUE(model.ok());
  data::Dataset local = data::GenerateSite({}, 0, 200);
  v1::TrainTask task;
  task.set_schema_hash((*model)->schema().Hash());
  task.set_learning_rate(0.05);
  task.set_epochs(1);
  task.set_batch_size(32);
  auto update = Runtime::Train(task, base, local, local);
  ASSERT_TRUE(update.ok()) << update.status();
  EXPECT_EQ(static_cast<int64_t>(update->delta.size()), (*model)->schema().NumElements());
  EXPECT_EQ(update->num_samples, 200);
  EXPECT_GT(L2Norm(update->delta), 0.0);
  EXPECT_EQ(update->metrics.count("local_accuracy"), 1u);

  v1::TrainTask other = task;
  other.set_schema_hash(std::string(64, '0'));
  EXPECT_EQ(Runtime::Train(other, base, local, local).status().code(),
            absl::StatusCode::kInvalidArgument);
  data::Dataset narrow = local;
  narrow.feature_names.pop_back();
  EXPECT_EQ(Runtime::Train(task, base, narrow, narrow).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// A task that accepts partial work stops after the epoch that leaves too little time before
// its deadline, and says how many epochs it ran; one that does not runs them all.
TEST(RuntimeTest, PartialWorkStopsBeforeTheDeadlineAndCountsItsEpochs) {
  const std::string base = Archive(1);
  auto model = torchlib::Model::Load(base);
  ASSERT_TRUE(model.ok());
  const data::Dataset local = data::GenerateSite({}, 0, 200);
  v1::TrainTask task;
  task.set_schema_hash((*model)->schema().Hash());
  task.set_learning_rate(0.05);
  task.set_batch_size(32);
  task.set_epochs(3);
  task.set_deadline_unix_ms(absl::ToUnixMillis(absl::Now() + absl::Hours(1)));
  auto whole = Runtime::Train(task, base, local, local);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->metrics.at("epochs"), 3);

  // Far more epochs than fit before a deadline 2 s away (with a 1 s upload margin).
  task.set_epochs(1000000);
  task.set_accept_partial_work(true);
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  task.set_deadline_unix_ms(absl::ToUnixMillis(deadline));
  auto partial = Runtime::Train(task, base, local, local);
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_GE(partial->metrics.at("epochs"), 1);
  EXPECT_LT(partial->metrics.at("epochs"), 1000000);
  EXPECT_LT(absl::Now(), deadline) << "training ran into the upload margin";
  EXPECT_GT(L2Norm(partial->delta), 0.0);
}

double Seconds(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// These check a behaviour with a wide margin, not a speed: a capped thread must stay well
// clear of a whole core even on a busy machine.
TEST(TrainLimitsTest, DutyCycleHoldsABusyThreadToItsShare) {
  constexpr double kShare = 0.3;
  double cpu = 0, wall = 0;
  std::thread([&] {
    DutyCycle duty(kShare);
    const double cpu0 = Seconds(CLOCK_THREAD_CPUTIME_ID), wall0 = Seconds(CLOCK_MONOTONIC);
    while (Seconds(CLOCK_MONOTONIC) - wall0 < 0.6) {
      const double until = Seconds(CLOCK_THREAD_CPUTIME_ID) + 0.002;  // 2 ms of work
      while (Seconds(CLOCK_THREAD_CPUTIME_ID) < until) {
      }
      duty.Pace();
    }
    cpu = Seconds(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    wall = Seconds(CLOCK_MONOTONIC) - wall0;
  }).join();
  EXPECT_GT(cpu, 0.0);
  EXPECT_LE(cpu / wall, kShare + 0.1) << cpu << " s of CPU in " << wall << " s";
}

TEST(TrainLimitsTest, TrainingUnderACpuShareUsesAtMostThatShare) {
  constexpr double kShare = 0.3;
  const std::string base = Archive(1);
  auto model = torchlib::Model::Load(base);
  ASSERT_TRUE(model.ok());
  const data::Dataset local = data::GenerateSite({}, 0, 3000);
  const data::Dataset holdout = data::GenerateSite({}, 0, 50, /*stream=*/1);
  v1::TrainTask task;
  task.set_schema_hash((*model)->schema().Hash());
  task.set_learning_rate(0.05);
  task.set_epochs(8);
  task.set_batch_size(16);
  TrainLimits limits;
  limits.threads = 1;
  limits.cpu_share = kShare;
  // Nothing else runs in this process, so its CPU time is the trainer's (and any helper
  // thread LibTorch or BLAS might start).
  const double cpu0 = Seconds(CLOCK_PROCESS_CPUTIME_ID), wall0 = Seconds(CLOCK_MONOTONIC);
  auto update = Runtime::Train(task, base, local, holdout, limits);
  const double cpu = Seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
  const double wall = Seconds(CLOCK_MONOTONIC) - wall0;
  ASSERT_TRUE(update.ok()) << update.status();
  EXPECT_EQ(update->num_samples, 3000);
  EXPECT_LE(cpu / wall, kShare + 0.15) << cpu << " s of CPU in " << wall << " s";
  RecordProperty("cpu_seconds", std::to_string(cpu));
  RecordProperty("wall_seconds", std::to_string(wall));
}

TEST(TrainLimitsTest, BadLimitsAreRefused) {
  const std::string base = Archive(1);
  const data::Dataset local = data::GenerateSite({}, 0, 10);
  for (double share : {0.0, -0.5, 1.5}) {
    TrainLimits limits;
    limits.cpu_share = share;
    EXPECT_EQ(Runtime::Train({}, base, local, local, limits).status().code(),
              absl::StatusCode::kInvalidArgument)
        << share;
  }
}

TEST(TrainLimitsTest, LowerPriorityAppliesToTheCallingThreadOnly) {
  const int before = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));
  int inside = 0, expected = 0;
  std::thread([&] {
    const id_t tid = static_cast<id_t>(gettid());
    expected = std::min(19, getpriority(PRIO_PROCESS, tid) + 5);
    LowerThreadPriority(5);
    inside = getpriority(PRIO_PROCESS, tid);
  }).join();
  EXPECT_EQ(inside, expected);
  EXPECT_EQ(getpriority(PRIO_PROCESS, static_cast<id_t>(gettid())), before);
}

}  // namespace
}  // namespace fedge::edge::runtime
