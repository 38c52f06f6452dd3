#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/data/dataset.h"
#include "common/tensor/flat.h"
#include "common/torch/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::torchlib {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class OneThread : public ::testing::Environment {
 public:
  void SetUp() override { SetNumThreads(1); }
};
const auto* const kOneThread = ::testing::AddGlobalTestEnvironment(new OneThread);

std::unique_ptr<Model> MustBuild(const BuiltinOptions& options) {
  auto model = Model::Builtin(options);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(model).value() : nullptr;
}

BuiltinOptions Mlp(int64_t features, int64_t classes, std::vector<int> hidden) {
  BuiltinOptions o;
  o.architecture = "mlp";
  o.num_features = features;
  o.num_classes = classes;
  o.hidden = std::move(hidden);
  o.seed = 7;
  return o;
}

std::vector<std::string> Names(const Schema& schema) {
  std::vector<std::string> out;
  for (const auto& t : schema.tensors) out.push_back(t.name);
  return out;
}

// Two well-separated Gaussian blobs in `dims` dimensions: class 0 around -2, class 1 around +2.
data::Dataset Blobs(int per_class, int dims, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.7f);
  data::Dataset d;
  for (int j = 0; j < dims; ++j) d.feature_names.push_back("x" + std::to_string(j));
  for (int i = 0; i < 2 * per_class; ++i) {
    const int label = i % 2;
    for (int j = 0; j < dims; ++j) d.features.push_back((label ? 2.0f : -2.0f) + noise(rng));
    d.labels.push_back(label);
  }
  return d;
}

double Softmax0(double a, double b) { return 1.0 / (1.0 + std::exp(b - a)); }

// ------------------------------------------------------------------------------------------
// Builtin

TEST(TorchBuiltinTest, MlpSchemaMatchesLayerShapes) {
  BuiltinOptions o = Mlp(4, 3, {5, 2});
  o.norm_mean = {0, 1, 2, 3};
  o.norm_std = {1, 1, 2, 2};
  auto m = MustBuild(o);
  ASSERT_NE(m, nullptr);
  const Schema& s = m->schema();
  EXPECT_THAT(Names(s), ElementsAre("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                    "out.weight", "out.bias"));
  EXPECT_EQ(s.tensors[0].shape, (std::vector<int64_t>{5, 4}));
  EXPECT_EQ(s.tensors[1].shape, (std::vector<int64_t>{5}));
  EXPECT_EQ(s.tensors[2].shape, (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(s.tensors[3].shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(s.tensors[4].shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(s.tensors[5].shape, (std::vector<int64_t>{3}));
  for (const auto& t : s.tensors) EXPECT_EQ(t.dtype, "float32");
  // 5*4+5 + 2*5+2 + 3*2+3; the baked normalization is not part of the schema.
  EXPECT_EQ(s.NumElements(), 46);
  EXPECT_EQ(m->Flat().size(), 46u);
}

TEST(TorchBuiltinTest, Conv1dSchemaMatchesLayerShapes) {
  BuiltinOptions o;
  o.architecture = "conv1d";
  o.num_features = 12;  // 3 channels x 4 steps
  o.window = 4;
  o.num_classes = 2;
  o.hidden = {6, 5};
  auto m = MustBuild(o);
  ASSERT_NE(m, nullptr);
  const Schema& s = m->schema();
  EXPECT_THAT(Names(s), ElementsAre("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                    "fc1.weight", "fc1.bias", "out.weight", "out.bias"));
  EXPECT_EQ(s.tensors[0].shape, (std::vector<int64_t>{6, 3, 3}));
  EXPECT_EQ(s.tensors[2].shape, (std::vector<int64_t>{6, 6, 3}));
  EXPECT_EQ(s.tensors[4].shape, (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(s.tensors[6].shape, (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(s.NumElements(), 54 + 6 + 108 + 6 + 30 + 5 + 10 + 2);

  std::vector<float> rows(2 * 12, 0.5f);
  auto pred = m->Predict(rows, 12);
  ASSERT_TRUE(pred.ok()) << pred.status();
  ASSERT_EQ(pred->size(), 2u);
  EXPECT_EQ((*pred)[0].scores.size(), 2u);
}

TEST(TorchBuiltinTest, InitIsSeededAndBoundedByFanIn) {
  auto a = MustBuild(Mlp(4, 3, {5}));
  auto b = MustBuild(Mlp(4, 3, {5}));
  BuiltinOptions other = Mlp(4, 3, {5});
  other.seed = 8;
  auto c = MustBuild(other);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->Flat(), b->Flat());
  EXPECT_NE(a->Flat(), c->Flat());
  // fc1 (fan_in 4): |w| <= 1/2; out (fan_in 5): |w| <= 1/sqrt(5).
  const FlatTensor flat = a->Flat();
  for (int i = 0; i < 25; ++i) EXPECT_LE(std::abs(flat[i]), 0.5f);
  for (size_t i = 25; i < flat.size(); ++i) EXPECT_LE(std::abs(flat[i]), 1 / std::sqrt(5.0f));
}

TEST(TorchBuiltinTest, RejectsBadOptions) {
  auto code = [](BuiltinOptions o) { return Model::Builtin(o).status().code(); };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  BuiltinOptions o = Mlp(4, 3, {5});
  o.architecture = "transformer";
  EXPECT_EQ(code(o), kInvalid);
  EXPECT_EQ(code(Mlp(0, 3, {5})), kInvalid);
  EXPECT_EQ(code(Mlp(4, 0, {5})), kInvalid);
  EXPECT_EQ(code(Mlp(4, 3, {0})), kInvalid);
  o = Mlp(4, 3, {5});
  o.norm_mean = {0, 0, 0};
  o.norm_std = {1, 1, 1};
  EXPECT_EQ(code(o), kInvalid);
  o.norm_mean = {0, 0, 0, 0};
  o.norm_std = {1, 1, 0, 1};
  EXPECT_EQ(code(o), kInvalid);
  BuiltinOptions conv;
  conv.architecture = "conv1d";
  conv.num_features = 12;
  conv.num_classes = 2;
  conv.hidden = {4, 4};
  conv.window = 5;
  EXPECT_EQ(code(conv), kInvalid);
  conv.window = 4;
  conv.hidden = {4};
  EXPECT_EQ(code(conv), kInvalid);
  conv.hidden = {4, 4};
  EXPECT_TRUE(Model::Builtin(conv).ok());
}

// ------------------------------------------------------------------------------------------
// Known weights

// A 2-feature, 2-class linear model with baked normalization mean {1, 2}, std {2, 4}.
std::unique_ptr<Model> KnownLinear() {
  BuiltinOptions o = Mlp(2, 2, {});
  o.norm_mean = {1, 2};
  o.norm_std = {2, 4};
  auto m = MustBuild(o);
  // out.weight [[1, 2], [3, -1]], out.bias [0.5, -0.5]
  EXPECT_TRUE(m->SetFlat({1, 2, 3, -1, 0.5f, -0.5f}).ok());
  return m;
}

TEST(TorchKnownWeightsTest, PredictMatchesHandComputation) {
  auto m = KnownLinear();
  // x = (3, 6) normalizes to (1, 1): logits (1 + 2 + 0.5, 3 - 1 - 0.5) = (3.5, 1.5).
  // x = (1, 10) normalizes to (0, 2): logits (4.5, -2.5).
  // x = (-1, 2) normalizes to (-1, 0): logits (-0.5, -3.5).
  auto pred = m->Predict({3, 6, 1, 10, -1, 2}, 2);
  ASSERT_TRUE(pred.ok()) << pred.status();
  ASSERT_EQ(pred->size(), 3u);
  const double expected[3][2] = {{3.5, 1.5}, {4.5, -2.5}, {-0.5, -3.5}};
  for (int i = 0; i < 3; ++i) {
    const Prediction& p = (*pred)[i];
    EXPECT_NEAR(p.scores[0], expected[i][0], 1e-5);
    EXPECT_NEAR(p.scores[1], expected[i][1], 1e-5);
    EXPECT_NEAR(p.probabilities[0], Softmax0(expected[i][0], expected[i][1]), 1e-6);
    EXPECT_NEAR(p.probabilities[0] + p.probabilities[1], 1.0, 1e-6);
    EXPECT_EQ(p.label, 0);
  }
}

TEST(TorchKnownWeightsTest, HiddenReluMatchesHandComputation) {
  auto m = MustBuild(Mlp(2, 2, {2}));
  // fc1.weight [[1, 0], [0, -1]], fc1.bias [0, 0.5]; out.weight [[1, 1], [-1, 2]], bias [0, 0].
  ASSERT_TRUE(m->SetFlat({1, 0, 0, -1, 0, 0.5f, 1, 1, -1, 2, 0, 0}).ok());
  // x = (2, 3): h = relu(2, -2.5) = (2, 0); logits (2, -2).
  // x = (-1, -4): h = relu(-1, 4.5) = (0, 4.5); logits (4.5, 9).
  auto pred = m->Predict({2, 3, -1, -4}, 2);
  ASSERT_TRUE(pred.ok()) << pred.status();
  EXPECT_NEAR((*pred)[0].scores[0], 2, 1e-6);
  EXPECT_NEAR((*pred)[0].scores[1], -2, 1e-6);
  EXPECT_EQ((*pred)[0].label, 0);
  EXPECT_NEAR((*pred)[1].scores[0], 4.5, 1e-6);
  EXPECT_NEAR((*pred)[1].scores[1], 9, 1e-6);
  EXPECT_EQ((*pred)[1].label, 1);
}

TEST(TorchKnownWeightsTest, EvaluateMatchesHandComputation) {
  auto m = KnownLinear();
  data::Dataset d;
  d.feature_names = {"a", "b"};
  d.features = {3, 6, -1, 2};  // logits (3.5, 1.5) and (-0.5, -3.5), both predict class 0
  d.labels = {0, 1};
  auto eval = m->Evaluate(d);
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_EQ(eval->num_samples, 2);
  EXPECT_DOUBLE_EQ(eval->accuracy, 0.5);
  const double loss0 = -std::log(Softmax0(3.5, 1.5));
  const double loss1 = -std::log(1 - Softmax0(-0.5, -3.5));
  EXPECT_NEAR(eval->loss, (loss0 + loss1) / 2, 1e-5);
}

TEST(TorchKnownWeightsTest, InputNormalizationMatchesNormalizingByHand) {
  auto m = MustBuild(Mlp(2, 2, {}));
  ASSERT_TRUE(m->SetFlat({1, 2, 3, -1, 0.5f, -0.5f}).ok());
  auto plain = m->Predict({1, 1}, 2);
  ASSERT_TRUE(m->SetInputNormalization({1, 2}, {2, 4}).ok());
  auto normalized = m->Predict({3, 6}, 2);  // (3-1)/2, (6-2)/4 = (1, 1)
  ASSERT_TRUE(plain.ok() && normalized.ok());
  EXPECT_NEAR((*normalized)[0].scores[0], (*plain)[0].scores[0], 1e-6);
  EXPECT_NEAR((*normalized)[0].scores[1], (*plain)[0].scores[1], 1e-6);

  EXPECT_EQ(m->SetInputNormalization({1}, {1, 2}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->SetInputNormalization({1, 2}, {1, 0}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->Predict({1, 2, 3}, 3).status().code(), absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------------------------------------
// Serialize, Load, Clone, SetFlat

TEST(TorchSerializeTest, IsDeterministicAndRoundTrips) {
  BuiltinOptions o = Mlp(3, 2, {4});
  o.norm_mean = {1, -1, 0.5f};
  o.norm_std = {2, 0.5f, 3};
  auto m = MustBuild(o);
  m->SetExtraFile(kContractFile, R"({"task":"classification"})");
  m->SetExtraFile("notes.txt", "hello");
  auto a = m->Serialize();
  auto b = m->Serialize();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  // A second build from the same options gives the same bytes, too.
  auto twin = MustBuild(o);
  twin->SetExtraFile(kContractFile, R"({"task":"classification"})");
  twin->SetExtraFile("notes.txt", "hello");
  EXPECT_EQ(*twin->Serialize(), *a);

  auto loaded = Model::Load(*a);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->Flat(), m->Flat());
  EXPECT_EQ((*loaded)->schema().Hash(), m->schema().Hash());
  EXPECT_EQ((*loaded)->extra_files(), m->extra_files());
  EXPECT_EQ(*(*loaded)->Serialize(), *a);

  // The baked normalization survives: predictions are bit-identical.
  const std::vector<float> rows = {1, 2, 3, -4, 0, 9};
  auto p1 = m->Predict(rows, 3);
  auto p2 = (*loaded)->Predict(rows, 3);
  ASSERT_TRUE(p1.ok() && p2.ok());
  for (int i = 0; i < 2; ++i) EXPECT_EQ((*p1)[i].scores, (*p2)[i].scores);
}

TEST(TorchSerializeTest, BytesChangeWithWeights) {
  auto m = MustBuild(Mlp(3, 2, {4}));
  auto before = m->Serialize();
  FlatTensor flat = m->Flat();
  flat[0] += 1;
  ASSERT_TRUE(m->SetFlat(flat).ok());
  EXPECT_NE(*m->Serialize(), *before);
  flat[0] -= 1;
  ASSERT_TRUE(m->SetFlat(flat).ok());
  EXPECT_EQ(*m->Serialize(), *before);
}

TEST(TorchSerializeTest, BakedNormalizationSurvivesRoundTripWithKnownWeights) {
  auto m = KnownLinear();
  auto loaded = Model::Load(*m->Serialize());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto pred = (*loaded)->Predict({3, 6}, 2);
  ASSERT_TRUE(pred.ok());
  EXPECT_NEAR((*pred)[0].scores[0], 3.5, 1e-5);
  EXPECT_NEAR((*pred)[0].scores[1], 1.5, 1e-5);
}

TEST(TorchLoadTest, RefusesGarbage) {
  for (const std::string& bytes :
       {std::string("not a model"), std::string(), std::string(4096, '\0'),
        std::string("PK\x03\x04garbage-after-zip-magic", 26)}) {
    auto m = Model::Load(bytes);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  }
  auto good = MustBuild(Mlp(3, 2, {4}))->Serialize();
  auto truncated = Model::Load(good->substr(0, good->size() / 2));
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Model::LoadFile("/nonexistent/model.pt").status().code(), absl::StatusCode::kNotFound);
}

TEST(TorchSetFlatTest, RefusesWrongSizeAndKeepsWeights) {
  auto m = MustBuild(Mlp(3, 2, {4}));
  const FlatTensor before = m->Flat();
  std::vector<float> short_values(before.size() - 1, 0.0f);
  std::vector<float> long_values(before.size() + 1, 0.0f);
  EXPECT_EQ(m->SetFlat(short_values).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->SetFlat(long_values).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->Flat(), before);
  std::vector<float> ramp(before.size());
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = 0.01f * i;
  ASSERT_TRUE(m->SetFlat(ramp).ok());
  EXPECT_EQ(m->Flat(), ramp);
}

TEST(TorchCloneTest, IsIndependentOfOriginal) {
  auto m = MustBuild(Mlp(2, 2, {4}));
  m->SetExtraFile(kContractFile, "{}");
  ASSERT_TRUE(m->SetInputNormalization({0.5f, 0.5f}, {2, 2}).ok());
  const FlatTensor before = m->Flat();
  auto clone = m->Clone();
  ASSERT_TRUE(clone.ok()) << clone.status();
  EXPECT_EQ((*clone)->Flat(), before);
  EXPECT_EQ((*clone)->extra_files(), m->extra_files());
  EXPECT_EQ((*(*clone)->Predict({1, 2}, 2))[0].scores, (*m->Predict({1, 2}, 2))[0].scores);

  TrainOptions t;
  t.epochs = 2;
  ASSERT_TRUE((*clone)->Train(Blobs(20, 2, 1), t).ok());
  EXPECT_NE((*clone)->Flat(), before);
  EXPECT_EQ(m->Flat(), before);
  // And the other way round.
  const FlatTensor trained = (*clone)->Flat();
  std::vector<float> zeros(before.size(), 0.0f);
  ASSERT_TRUE(m->SetFlat(zeros).ok());
  EXPECT_EQ((*clone)->Flat(), trained);
}

// ------------------------------------------------------------------------------------------
// Train, Predict, Evaluate

TEST(TorchTrainTest, LearnsSeparableBlobsWithSgdAndAdam) {
  const data::Dataset train = Blobs(100, 4, 1);
  const data::Dataset holdout = Blobs(50, 4, 2);
  for (const std::string optimizer : {"sgd", "adam"}) {
    SCOPED_TRACE(optimizer);
    auto m = MustBuild(Mlp(4, 2, {8}));
    auto initial = m->Evaluate(holdout);
    ASSERT_TRUE(initial.ok()) << initial.status();
    TrainOptions t;
    t.optimizer = optimizer;
    t.learning_rate = optimizer == "sgd" ? 0.05 : 0.01;
    t.epochs = 5;
    t.batch_size = 16;
    auto result = m->Train(train, t);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->num_samples, 200);
    EXPECT_GT(result->seconds, 0);
    EXPECT_LT(result->train_loss, initial->loss);
    auto after = m->Evaluate(holdout);
    ASSERT_TRUE(after.ok());
    EXPECT_LT(after->loss, initial->loss);
    EXPECT_GE(after->accuracy, 0.95);

    // Predict agrees with the labels and with itself: probabilities sum to one, label is the
    // argmax of both scores and probabilities, and the accuracy matches Evaluate's.
    auto pred = m->Predict(holdout.features, 4);
    ASSERT_TRUE(pred.ok());
    int correct = 0;
    for (size_t i = 0; i < pred->size(); ++i) {
      const Prediction& p = (*pred)[i];
      EXPECT_NEAR(p.probabilities[0] + p.probabilities[1], 1.0, 1e-5);
      const int64_t by_score = p.scores[1] > p.scores[0] ? 1 : 0;
      const int64_t by_prob = p.probabilities[1] > p.probabilities[0] ? 1 : 0;
      EXPECT_EQ(p.label, by_score);
      EXPECT_EQ(p.label, by_prob);
      correct += p.label == holdout.labels[i];
    }
    EXPECT_DOUBLE_EQ(after->accuracy, static_cast<double>(correct) / pred->size());
  }
}

TEST(TorchTrainTest, Conv1dLearnsBlobs) {
  BuiltinOptions o;
  o.architecture = "conv1d";
  o.num_features = 8;
  o.window = 4;
  o.num_classes = 2;
  o.hidden = {4, 4};
  auto m = MustBuild(o);
  TrainOptions t;
  t.optimizer = "adam";
  t.learning_rate = 0.02;
  t.epochs = 5;
  ASSERT_TRUE(m->Train(Blobs(50, 8, 3), t).ok());
  auto eval = m->Evaluate(Blobs(50, 8, 4));
  ASSERT_TRUE(eval.ok());
  EXPECT_GE(eval->accuracy, 0.95);
}

TEST(TorchTrainTest, IsDeterministicForASeed) {
  auto a = MustBuild(Mlp(4, 2, {8}));
  auto b = MustBuild(Mlp(4, 2, {8}));
  TrainOptions t;
  t.epochs = 2;
  t.seed = 11;
  const data::Dataset d = Blobs(30, 4, 5);
  auto ra = a->Train(d, t);
  auto rb = b->Train(d, t);
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(a->Flat(), b->Flat());
  EXPECT_EQ(ra->train_loss, rb->train_loss);
  // Training leaves the archive canonical: same weights, same bytes as an untrained twin.
  auto twin = MustBuild(Mlp(4, 2, {8}));
  ASSERT_TRUE(twin->SetFlat(a->Flat()).ok());
  EXPECT_EQ(*twin->Serialize(), *a->Serialize());
}

TEST(TorchTrainTest, RefusesBadInputAndKeepsWeights) {
  auto m = MustBuild(Mlp(4, 3, {8}));
  const FlatTensor before = m->Flat();
  TrainOptions t;
  const auto kInvalid = absl::StatusCode::kInvalidArgument;

  data::Dataset empty;
  empty.feature_names = {"a", "b", "c", "d"};
  EXPECT_EQ(m->Train(empty, t).status().code(), kInvalid);

  const data::Dataset narrow = Blobs(10, 3, 1);  // 3 features, model wants 4
  auto narrow_result = m->Train(narrow, t);
  EXPECT_EQ(narrow_result.status().code(), kInvalid) << narrow_result.status();

  data::Dataset bad_label = Blobs(10, 4, 1);
  bad_label.labels[3] = 3;  // the model has 3 classes
  auto label_result = m->Train(bad_label, t);
  EXPECT_EQ(label_result.status().code(), kInvalid);
  EXPECT_THAT(label_result.status().message(), HasSubstr("label 3"));

  data::Dataset ragged = Blobs(10, 4, 1);
  ragged.features.pop_back();
  EXPECT_EQ(m->Train(ragged, t).status().code(), kInvalid);

  data::Dataset nan = Blobs(10, 4, 1);
  nan.features[5] = std::nanf("");
  EXPECT_EQ(m->Train(nan, t).status().code(), kInvalid);

  TrainOptions bad = t;
  bad.optimizer = "lbfgs";
  EXPECT_EQ(m->Train(Blobs(10, 4, 1), bad).status().code(), kInvalid);
  bad = t;
  bad.batch_size = 0;
  EXPECT_EQ(m->Train(Blobs(10, 4, 1), bad).status().code(), kInvalid);

  EXPECT_EQ(m->Flat(), before);
}

TEST(TorchTrainTest, DivergenceIsReportedAndRolledBack) {
  auto m = MustBuild(Mlp(4, 2, {8}));
  const FlatTensor before = m->Flat();
  TrainOptions t;
  t.learning_rate = 1e38;
  t.epochs = 3;
  t.batch_size = 4;
  auto result = m->Train(Blobs(20, 4, 1), t);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInternal) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("training diverged"));
  EXPECT_THAT(result.status().message(), HasSubstr("lower the learning rate"));
  EXPECT_EQ(m->Flat(), before);
}

TEST(TorchPredictTest, WrongFeatureCountIsInvalidArgument) {
  auto plain = MustBuild(Mlp(4, 2, {8}));
  BuiltinOptions normalized_options = Mlp(4, 2, {8});
  normalized_options.norm_mean = {0, 0, 0, 0};
  normalized_options.norm_std = {1, 1, 1, 1};
  auto normalized = MustBuild(normalized_options);
  BuiltinOptions conv_options;
  conv_options.architecture = "conv1d";
  conv_options.num_features = 8;
  conv_options.window = 4;
  conv_options.num_classes = 2;
  conv_options.hidden = {4, 4};
  auto conv = MustBuild(conv_options);
  const std::vector<float> rows(2 * 5, 1.0f);
  for (Model* m : {plain.get(), normalized.get(), conv.get()}) {
    auto pred = m->Predict(rows, 5);
    EXPECT_EQ(pred.status().code(), absl::StatusCode::kInvalidArgument) << pred.status();
    data::Dataset d = Blobs(3, 5, 1);
    EXPECT_EQ(m->Evaluate(d).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(plain->Predict(rows, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plain->Predict(rows, 0).status().code(), absl::StatusCode::kInvalidArgument);
  auto none = plain->Predict({}, 4);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(TorchPredictTest, LargeBatchesSpanChunks) {
  auto m = KnownLinear();
  // 2500 rows, more than two evaluation chunks; every row is (3, 6) -> logits (3.5, 1.5).
  std::vector<float> rows;
  for (int i = 0; i < 2500; ++i) rows.insert(rows.end(), {3, 6});
  auto pred = m->Predict(rows, 2);
  ASSERT_TRUE(pred.ok());
  ASSERT_EQ(pred->size(), 2500u);
  EXPECT_NEAR(pred->back().scores[0], 3.5, 1e-5);
  data::Dataset d;
  d.feature_names = {"a", "b"};
  d.features = rows;
  d.labels.assign(2500, 1);
  auto eval = m->Evaluate(d);
  ASSERT_TRUE(eval.ok());
  EXPECT_EQ(eval->num_samples, 2500);
  EXPECT_DOUBLE_EQ(eval->accuracy, 0.0);
  EXPECT_NEAR(eval->loss, -std::log(1 - Softmax0(3.5, 1.5)), 1e-5);
}

TEST(TorchPredictTest, ConcurrentCallersSeeTheSameResults) {
  auto m = MustBuild(Mlp(4, 3, {16, 8}));
  const data::Dataset d = Blobs(16, 4, 9);
  auto expected = m->Predict(d.features, 4);
  ASSERT_TRUE(expected.ok());
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        auto got = m->Predict(d.features, 4);
        if (!got.ok()) {
          ++mismatches[t];
          continue;
        }
        for (size_t r = 0; r < got->size(); ++r) {
          if ((*got)[r].scores != (*expected)[r].scores) ++mismatches[t];
        }
        if (!m->Evaluate(d).ok()) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

}  // namespace
}  // namespace fedge::torchlib
