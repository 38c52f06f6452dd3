// The built-in architectures learn the built-in synthetic task: far above chance (0.2) on the
// fleet-wide holdout after a few epochs on pooled site data.

#include <thread>

#include "common/data/synthetic.h"
#include "common/torch/model.h"
#include "gtest/gtest.h"

namespace fedge {
namespace {

double TrainAndScore(const std::string& architecture, int window) {
  data::SyntheticOptions syn;
  syn.window = window;
  data::Dataset train = data::GenerateSite(syn, 0, 600);
  for (int site = 1; site < syn.num_sites; ++site) {
    EXPECT_TRUE(train.Append(data::GenerateSite(syn, site, 600)).ok());
  }
  data::Dataset holdout = data::GenerateHoldout(syn, 800);
  auto stats = data::ComputeStats(train);
  torchlib::BuiltinOptions opt;
  opt.architecture = architecture;
  opt.num_features = train.num_features();
  opt.num_classes = static_cast<int64_t>(data::SyntheticLabels().size());
  opt.window = window;
  if (architecture == "conv1d") opt.hidden = {16, 32};
  opt.norm_mean = stats.mean;
  opt.norm_std = stats.std;
  opt.seed = 3;
  auto model = torchlib::Model::Builtin(opt);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return 0;
  torchlib::TrainOptions topt;
  topt.epochs = architecture == "conv1d" ? 12 : 4;
  topt.learning_rate = 0.05;
  auto trained = (*model)->Train(train, topt);
  EXPECT_TRUE(trained.ok()) << trained.status();
  auto eval = (*model)->Evaluate(holdout);
  EXPECT_TRUE(eval.ok()) << eval.status();
  return eval.ok() ? eval->accuracy : 0;
}

TEST(BuiltinTrainingTest, MlpLearnsSensorSummaries) { EXPECT_GT(TrainAndScore("mlp", 0), 0.8); }

TEST(BuiltinTrainingTest, Conv1dLearnsRawSensorWindows) {
  const double accuracy = TrainAndScore("conv1d", 64);
  EXPECT_GT(accuracy, 0.6);
  RecordProperty("accuracy", std::to_string(accuracy));
}

std::unique_ptr<torchlib::Model> SmallMlp() {
  torchlib::BuiltinOptions opt;
  opt.num_features = static_cast<int64_t>(data::SyntheticFeatureNames({}).size());
  opt.num_classes = static_cast<int64_t>(data::SyntheticLabels().size());
  opt.hidden = {8};
  auto model = torchlib::Model::Builtin(opt);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

TEST(TrainHooksTest, BetweenBatchesRunsAfterEveryStep) {
  auto model = SmallMlp();
  ASSERT_NE(model, nullptr);
  const data::Dataset train = data::GenerateSite({}, 0, 100);
  torchlib::TrainOptions opt;
  opt.epochs = 2;
  opt.batch_size = 32;
  int calls = 0;
  opt.between_batches = [&calls] { ++calls; };
  ASSERT_TRUE(model->Train(train, opt).ok());
  EXPECT_EQ(calls, 2 * 4);  // batches of 32, 32, 32 and 4 rows, twice
}

TEST(TrainHooksTest, TrainThreadsApplyToTheTrainingThreadAlone) {
  torchlib::SetNumThreads(2);
  auto model = SmallMlp();
  ASSERT_NE(model, nullptr);
  const data::Dataset train = data::GenerateSite({}, 0, 64);
  torchlib::TrainOptions opt;
  opt.threads = 1;
  int during = 0;
  int other_thread_during = 0;
  opt.between_batches = [&] {
    during = torchlib::NumThreads();
    // A thread that starts while training runs gets the process setting, not the cap.
    std::thread([&] { other_thread_during = torchlib::NumThreads(); }).join();
  };
  ASSERT_TRUE(model->Train(train, opt).ok());
  EXPECT_EQ(during, 1);
  EXPECT_EQ(other_thread_during, 2);
  EXPECT_EQ(torchlib::NumThreads(), 2);  // restored on return
  int fresh = 0;
  std::thread([&] { fresh = torchlib::NumThreads(); }).join();
  EXPECT_EQ(fresh, 2);
  torchlib::SetNumThreads(1);
}

}  // namespace
}  // namespace fedge
