// The built-in architectures learn the built-in synthetic task: far above chance (0.2) on the
// fleet-wide holdout after a few epochs on pooled site data.

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

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

namespace fedge {
namespace {

// The L2 distance between a model's weights and w0.
double Distance(const torchlib::Model& model, const FlatTensor& w0) {
  const FlatTensor w = model.Flat();
  double sum = 0;
  for (size_t i = 0; i < w.size(); ++i) sum += (w[i] - w0[i]) * (w[i] - w0[i]);
  return std::sqrt(sum);
}

// FedProx's proximal term pulls local training toward the starting weights: the larger mu, the
// closer the result stays; mu = 0 is exactly plain training.
TEST(ProximalTest, MuKeepsLocalTrainingNearTheStartingWeights) {
  const data::Dataset train = data::GenerateSite({}, 1, 400);
  auto stats = data::ComputeStats(train);
  torchlib::BuiltinOptions bopt;
  bopt.num_features = train.num_features();
  bopt.num_classes = static_cast<int64_t>(data::SyntheticLabels().size());
  bopt.hidden = {16};
  bopt.norm_mean = stats.mean;
  bopt.norm_std = stats.std;
  auto base = torchlib::Model::Builtin(bopt);
  ASSERT_TRUE(base.ok()) << base.status();
  const FlatTensor w0 = (*base)->Flat();
  auto train_with = [&](double mu) {
    auto model = (*base)->Clone();
    EXPECT_TRUE(model.ok());
    torchlib::TrainOptions opt;
    opt.epochs = 5;
    opt.learning_rate = 0.05;
    opt.seed = 4;
    opt.proximal_mu = mu;
    EXPECT_TRUE((*model)->Train(train, opt).ok());
    return std::move(*model);
  };
  auto plain = train_with(0);
  auto plain_again = train_with(0);
  EXPECT_EQ(plain->Flat(), plain_again->Flat()) << "training is deterministic";
  const double d0 = Distance(*plain, w0);
  const double d1 = Distance(*train_with(1), w0);
  const double d10 = Distance(*train_with(10), w0);
  EXPECT_GT(d0, 0);
  EXPECT_LT(d1, d0);
  EXPECT_LT(d10, d1);
  EXPECT_GT(d10, 0) << "the model still learns";

  torchlib::TrainOptions bad;
  bad.proximal_mu = -1;
  auto model = (*base)->Clone();
  EXPECT_EQ((*model)->Train(train, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

// With momentum 0, Train is plain (proximal) gradient descent: full-batch steps from zero
// weights on a linear model match steps computed here by hand in double precision,
// w ← w − lr · (∇ mean cross-entropy + mu · (w − w0)).
TEST(PlainSgdTest, FullBatchStepsMatchHandComputedProximalGradientDescent) {
  constexpr int kD = 4, kC = 3, kN = 8;
  data::Dataset train;
  train.feature_names = {"a", "b", "c", "d"};
  for (int i = 0; i < kN; ++i) {
    for (int j = 0; j < kD; ++j) train.features.push_back(std::sin(1.7 * i + 0.9 * j + 0.3));
    train.labels.push_back(i % kC);
  }
  torchlib::BuiltinOptions bopt;
  bopt.num_features = kD;
  bopt.num_classes = kC;
  bopt.hidden = {};  // one Linear layer: multinomial logistic regression
  auto model = torchlib::Model::Builtin(bopt);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ((*model)->schema().NumElements(), kC * kD + kC);
  ASSERT_TRUE((*model)->SetFlat(FlatTensor(kC * kD + kC, 0.0f)).ok());
  const double lr = 0.5, mu = 0.3;
  const int steps = 3;
  torchlib::TrainOptions opt;
  opt.momentum = 0;
  opt.learning_rate = lr;
  opt.proximal_mu = mu;
  opt.batch_size = kN;
  opt.epochs = steps;
  ASSERT_TRUE((*model)->Train(train, opt).ok());

  std::vector<double> w(kC * kD + kC, 0.0);  // weight [C, D] row-major, then bias [C]
  for (int step = 0; step < steps; ++step) {
    std::vector<double> grad(w.size(), 0.0);
    for (int i = 0; i < kN; ++i) {
      double z[kC], top = -1e300, total = 0;
      for (int c = 0; c < kC; ++c) {
        z[c] = w[kC * kD + c];
        for (int j = 0; j < kD; ++j) z[c] += w[c * kD + j] * train.features[i * kD + j];
        top = std::max(top, z[c]);
      }
      for (int c = 0; c < kC; ++c) total += (z[c] = std::exp(z[c] - top));
      for (int c = 0; c < kC; ++c) {
        const double g = (z[c] / total - (train.labels[i] == c ? 1.0 : 0.0)) / kN;
        for (int j = 0; j < kD; ++j) grad[c * kD + j] += g * train.features[i * kD + j];
        grad[kC * kD + c] += g;
      }
    }
    for (size_t k = 0; k < w.size(); ++k) w[k] -= lr * (grad[k] + mu * w[k]);  // w0 = 0
  }
  const FlatTensor got = (*model)->Flat();
  for (size_t k = 0; k < w.size(); ++k) EXPECT_NEAR(got[k], w[k], 1e-5) << "element " << k;
}

TEST(PlainSgdTest, RefusesMomentumOutsideZeroToOne) {
  const data::Dataset train = data::GenerateSite({}, 1, 20);
  torchlib::BuiltinOptions bopt;
  bopt.num_features = train.num_features();
  bopt.num_classes = static_cast<int64_t>(data::SyntheticLabels().size());
  auto model = torchlib::Model::Builtin(bopt);
  ASSERT_TRUE(model.ok()) << model.status();
  for (double m : {-0.1, 1.0}) {
    torchlib::TrainOptions opt;
    opt.momentum = m;
    EXPECT_EQ((*model)->Train(train, opt).status().code(), absl::StatusCode::kInvalidArgument)
        << "momentum " << m;
  }
}

}  // namespace
}  // namespace fedge
