#include "cloud/aggregation/robust.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::cloud::aggregation {
namespace {

using ::testing::HasSubstr;

std::vector<FlatTensor> RandomUpdates(int n, int d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<FlatTensor> updates(n, FlatTensor(d));
  for (FlatTensor& u : updates) {
    for (float& v : u) v = value(rng);
  }
  return updates;
}

void FoldAll(RoundAggregator& aggregator, const std::vector<FlatTensor>& updates) {
  for (size_t i = 0; i < updates.size(); ++i) {
    ASSERT_TRUE(aggregator.Fold({updates[i], static_cast<int64_t>(i % 5 + 1)}).ok());
  }
}

std::vector<double> AggregateOrDie(RoundAggregator& aggregator) {
  auto out = aggregator.Aggregate();
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : std::vector<double>();
}

void ExpectNear(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "coordinate " << i;
}

std::unique_ptr<RoundAggregator> Make(const std::string& rule, int64_t num_elements,
                                      const RuleParams& params = {}) {
  auto made = MakeRoundAggregator(rule, num_elements, params);
  EXPECT_TRUE(made.ok()) << made.status();
  return made.ok() ? std::move(made).value() : nullptr;
}

// References, written plainly: sort each coordinate's values.

std::vector<double> SortedMedian(const std::vector<FlatTensor>& updates) {
  std::vector<double> out(updates[0].size());
  for (size_t j = 0; j < out.size(); ++j) {
    std::vector<double> column;
    for (const FlatTensor& u : updates) column.push_back(u[j]);
    std::sort(column.begin(), column.end());
    const size_t n = column.size();
    out[j] = n % 2 == 1 ? column[n / 2] : (column[n / 2 - 1] + column[n / 2]) / 2;
  }
  return out;
}

std::vector<double> SortedTrimmedMean(const std::vector<FlatTensor>& updates, size_t trim) {
  std::vector<double> out(updates[0].size());
  for (size_t j = 0; j < out.size(); ++j) {
    std::vector<double> column;
    for (const FlatTensor& u : updates) column.push_back(u[j]);
    std::sort(column.begin(), column.end());
    double sum = 0;
    for (size_t i = trim; i < column.size() - trim; ++i) sum += column[i];
    out[j] = sum / static_cast<double>(column.size() - 2 * trim);
  }
  return out;
}

// Brute-force Krum: score every update against all others, pick the m lowest (earliest first
// among equal scores), average them.
std::vector<double> BruteForceKrum(const std::vector<FlatTensor>& updates, int f, int m) {
  const int n = static_cast<int>(updates.size());
  std::vector<double> score(n);
  for (int i = 0; i < n; ++i) {
    std::vector<double> distances;
    for (int j = 0; j < n; ++j) {
      if (j == i) continue;
      double d2 = 0;
      for (size_t k = 0; k < updates[i].size(); ++k) {
        const double diff = static_cast<double>(updates[i][k]) - updates[j][k];
        d2 += diff * diff;
      }
      distances.push_back(d2);
    }
    std::sort(distances.begin(), distances.end());
    for (int k = 0; k < n - f - 2; ++k) score[i] += distances[k];
  }
  std::vector<bool> taken(n, false);
  std::vector<double> out(updates[0].size(), 0.0);
  for (int r = 0; r < m; ++r) {
    int best = -1;
    for (int i = 0; i < n; ++i) {
      if (!taken[i] && (best < 0 || score[i] < score[best])) best = i;
    }
    taken[best] = true;
    for (size_t k = 0; k < out.size(); ++k) out[k] += updates[best][k];
  }
  for (double& v : out) v /= m;
  return out;
}

double Norm(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x * x;
  return std::sqrt(sum);
}

TEST(WeightedMeanTest, WeightsUpdatesBySampleCount) {
  WeightedMean mean(3);
  FlatTensor a = {1, 2, 3}, b = {4, 0, -3};
  ASSERT_TRUE(mean.Fold({a, 100}).ok());
  ASSERT_TRUE(mean.Fold({b, 300}).ok());
  EXPECT_EQ(mean.folded(), 2);
  EXPECT_EQ(mean.name(), "mean");
  ExpectNear(AggregateOrDie(mean),
             {(100 * 1 + 300 * 4) / 400.0, (100 * 2 + 300 * 0) / 400.0,
              (100 * 3 + 300 * -3) / 400.0},
             1e-12);
}

TEST(CoordinateMedianTest, MatchesASortedMedianOnRandomData) {
  for (int n : {1, 2, 7, 10, 33}) {
    const auto updates = RandomUpdates(n, 200, 17 + n);
    CoordinateMedian median(200);
    FoldAll(median, updates);
    ExpectNear(AggregateOrDie(median), SortedMedian(updates), 1e-12);
  }
}

TEST(CoordinateMedianTest, IgnoresAHugeOutlierThatMovesTheMean) {
  CoordinateMedian median(2);
  WeightedMean mean(2);
  for (float v : {1.0f, 2.0f, 1e6f, 3.0f, 4.0f}) {
    ASSERT_TRUE(median.Fold({FlatTensor{v, -v}, 1}).ok());
    ASSERT_TRUE(mean.Fold({FlatTensor{v, -v}, 1}).ok());
  }
  ExpectNear(AggregateOrDie(median), {3, -3}, 0);
  EXPECT_GT(AggregateOrDie(mean)[0], 1e5);
}

TEST(CoordinateMedianTest, EvenCountAveragesTheTwoMiddleValuesUnweighted) {
  CoordinateMedian median(1);
  ASSERT_TRUE(median.Fold({FlatTensor{10}, 1000}).ok());
  ASSERT_TRUE(median.Fold({FlatTensor{1}, 1}).ok());
  ASSERT_TRUE(median.Fold({FlatTensor{4}, 1}).ok());
  ASSERT_TRUE(median.Fold({FlatTensor{2}, 1}).ok());
  ExpectNear(AggregateOrDie(median), {3}, 0);
}

TEST(TrimmedMeanTest, MatchesSortAndDropOnRandomData) {
  struct Case {
    double fraction;
    int n;
    size_t trim;
  };
  for (const Case& c : {Case{0.0, 9, 0}, Case{0.1, 20, 2}, Case{0.25, 12, 3},
                        Case{0.45, 11, 4}, Case{0.29, 100, 29}, Case{0.2, 4, 0}}) {
    SCOPED_TRACE(testing::Message() << "fraction " << c.fraction << ", n " << c.n);
    const auto updates = RandomUpdates(c.n, 150, 100 + c.n);
    auto trimmed = TrimmedMean::Create(150, c.fraction);
    ASSERT_TRUE(trimmed.ok());
    FoldAll(**trimmed, updates);
    ExpectNear(AggregateOrDie(**trimmed), SortedTrimmedMean(updates, c.trim), 1e-12);
  }
}

TEST(TrimmedMeanTest, DropsOutliersAtBothEndsAndIgnoresWeights) {
  auto trimmed = TrimmedMean::Create(1, 0.2);
  ASSERT_TRUE(trimmed.ok());
  EXPECT_EQ((*trimmed)->name(), "trimmed_mean");
  // Ten values; 0.2 · 10 = 2 dropped at each end: -1e6, -5 and 1e6, 1e5.
  int64_t samples = 1;
  for (float v : {-1e6f, 1e6f, 1.0f, 2.0f, 3.0f, -5.0f, 1e5f, 4.0f, 5.0f, 6.0f}) {
    ASSERT_TRUE((*trimmed)->Fold({FlatTensor{v}, samples *= 2}).ok());
  }
  ExpectNear(AggregateOrDie(**trimmed), {(1 + 2 + 3 + 4 + 5 + 6) / 6.0}, 1e-12);
}

TEST(TrimmedMeanTest, CreateRefusesFractionsOutsideZeroToHalf) {
  for (double bad : {-0.1, 0.5, 0.7, std::numeric_limits<double>::quiet_NaN()}) {
    EXPECT_EQ(TrimmedMean::Create(4, bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_EQ(TrimmedMean::Create(-1, 0.1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(TrimmedMean::Create(4, 0.0).ok());
  EXPECT_TRUE(TrimmedMean::Create(4, 0.49).ok());
}

TEST(TrimmedMeanTest, RefusesWhenTrimmingWouldLeaveNothing) {
  // 0.4999999999999 · 2 rounds to one value dropped from each end of two.
  auto trimmed = TrimmedMean::Create(1, 0.4999999999999);
  ASSERT_TRUE(trimmed.ok());
  ASSERT_TRUE((*trimmed)->Fold({FlatTensor{1}, 1}).ok());
  ASSERT_TRUE((*trimmed)->Fold({FlatTensor{2}, 1}).ok());
  EXPECT_EQ((*trimmed)->Aggregate().status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*trimmed)->Fold({FlatTensor{3}, 1}).ok());
  ExpectNear(AggregateOrDie(**trimmed), {2}, 0);
}

TEST(KrumTest, MatchesBruteForceOnSmallRounds) {
  struct Case {
    int n, f, m;
  };
  for (const Case& c : {Case{3, 0, 1}, Case{5, 1, 1}, Case{7, 2, 1}, Case{7, 2, 3},
                        Case{10, 3, 4}, Case{12, 1, 12}}) {
    SCOPED_TRACE(testing::Message() << "n " << c.n << ", f " << c.f << ", m " << c.m);
    const auto updates = RandomUpdates(c.n, 40, 1000 + c.n * 10 + c.m);
    auto krum = Krum::Create(40, c.f, c.m);
    ASSERT_TRUE(krum.ok());
    FoldAll(**krum, updates);
    ExpectNear(AggregateOrDie(**krum), BruteForceKrum(updates, c.f, c.m), 1e-12);
  }
}

// Five honest updates around (1, 1) and two attackers far away, folded first.
std::vector<FlatTensor> HonestClusterAndOutliers() {
  return {{100, 100}, {-100, 50}, {1.1f, 1}, {1, 1}, {0.9f, 1}, {1, 1.1f}, {1, 0.9f}};
}

TEST(KrumTest, PicksTheHonestClusterCentreOverFarOutliers) {
  auto krum = Krum::Create(2, /*byzantine=*/2, /*multi=*/1);
  ASSERT_TRUE(krum.ok());
  EXPECT_EQ((*krum)->name(), "krum");
  FoldAll(**krum, HonestClusterAndOutliers());
  // n − f − 2 = 3 neighbours: (1, 1) scores 3 · 0.01, every other honest update more.
  ExpectNear(AggregateOrDie(**krum), {1, 1}, 0);
}

TEST(KrumTest, MultiKrumAveragesTheHonestUpdatesUnweighted) {
  auto multi = Krum::Create(2, /*byzantine=*/2, /*multi=*/5);
  ASSERT_TRUE(multi.ok());
  EXPECT_EQ((*multi)->name(), "multi_krum");
  FoldAll(**multi, HonestClusterAndOutliers());
  ExpectNear(AggregateOrDie(**multi), {1, 1}, 1e-7);
}

TEST(KrumTest, EqualScoresGoToTheEarliestFolded) {
  // Points 0, 2, 4 on a line with f = 0: one neighbour each, every score is 4.
  for (const std::vector<float>& order : {std::vector<float>{4, 0, 2}, {2, 4, 0}, {0, 2, 4}}) {
    auto krum = Krum::Create(1, 0, 1);
    ASSERT_TRUE(krum.ok());
    for (float v : order) ASSERT_TRUE((*krum)->Fold({FlatTensor{v}, 1}).ok());
    ExpectNear(AggregateOrDie(**krum), {order[0]}, 0);
  }
}

TEST(KrumTest, NeedsAtLeastFPlusThreeUpdates) {
  auto krum = Krum::Create(2, /*byzantine=*/2, /*multi=*/1);
  ASSERT_TRUE(krum.ok());
  FoldAll(**krum, RandomUpdates(4, 2, 5));
  const absl::Status status = (*krum)->Aggregate().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("n = 4"));
  EXPECT_THAT(status.message(), HasSubstr("f = 2"));
  ASSERT_TRUE((*krum)->Fold({FlatTensor{0, 0}, 1}).ok());
  EXPECT_TRUE((*krum)->Aggregate().ok());
}

TEST(KrumTest, RefusesToAverageMoreUpdatesThanWereFolded) {
  auto multi = Krum::Create(2, 0, 5);
  ASSERT_TRUE(multi.ok());
  FoldAll(**multi, RandomUpdates(4, 2, 6));
  EXPECT_EQ((*multi)->Aggregate().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(KrumTest, CreateRefusesBadParameters) {
  EXPECT_EQ(Krum::Create(2, -1, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Krum::Create(2, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Krum::Create(-2, 0, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ClippedAggregatorTest, ScalesLargeUpdatesExactlyToMaxNorm) {
  auto clipped = ClippedAggregator::Create(std::make_unique<WeightedMean>(2), 5.0);
  ASSERT_TRUE(clipped.ok());
  EXPECT_EQ((*clipped)->name(), "clip(mean)");
  ASSERT_TRUE((*clipped)->Fold({FlatTensor{6, 8}, 3}).ok());  // norm 10
  ExpectNear(AggregateOrDie(**clipped), {3, 4}, 1e-6);
  EXPECT_EQ((*clipped)->clipped(), 1);

  // A random direction keeps its direction and ends at exactly the maximum norm.
  FlatTensor big = RandomUpdates(1, 300, 9)[0];
  for (float& v : big) v *= 10;
  auto one = ClippedAggregator::Create(std::make_unique<WeightedMean>(300), 2.5);
  ASSERT_TRUE(one.ok());
  ASSERT_TRUE((*one)->Fold({big, 1}).ok());
  const std::vector<double> out = AggregateOrDie(**one);
  EXPECT_NEAR(Norm(out), 2.5, 2.5 * 1e-6);
  const double scale = out[0] / big[0];
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], scale * big[i], 1e-6);
}

TEST(ClippedAggregatorTest, LeavesUpdatesWithinTheNormAlone) {
  auto clipped = ClippedAggregator::Create(std::make_unique<WeightedMean>(2), 5.0);
  ASSERT_TRUE(clipped.ok());
  ASSERT_TRUE((*clipped)->Fold({FlatTensor{3, 4}, 1}).ok());  // norm exactly 5
  ExpectNear(AggregateOrDie(**clipped), {3, 4}, 0);
  ASSERT_TRUE((*clipped)->Fold({FlatTensor{0.5f, -1}, 1}).ok());
  ExpectNear(AggregateOrDie(**clipped), {1.75, 1.5}, 0);
  EXPECT_EQ((*clipped)->clipped(), 0);
  EXPECT_EQ((*clipped)->folded(), 2);
}

TEST(ClippedAggregatorTest, MergeAddsClippedCountsAndNeedsTheSameNorm) {
  auto a = ClippedAggregator::Create(std::make_unique<CoordinateMedian>(2), 1.0);
  auto b = ClippedAggregator::Create(std::make_unique<CoordinateMedian>(2), 1.0);
  auto other_norm = ClippedAggregator::Create(std::make_unique<CoordinateMedian>(2), 2.0);
  auto other_inner = ClippedAggregator::Create(std::make_unique<WeightedMean>(2), 1.0);
  ASSERT_TRUE(a.ok() && b.ok() && other_norm.ok() && other_inner.ok());
  ASSERT_TRUE((*a)->Fold({FlatTensor{3, 4}, 1}).ok());
  ASSERT_TRUE((*b)->Fold({FlatTensor{0, 8}, 1}).ok());
  ASSERT_TRUE((*b)->Fold({FlatTensor{0.1f, 0}, 1}).ok());
  ASSERT_TRUE((*a)->Merge(**b).ok());
  EXPECT_EQ((*a)->clipped(), 2);
  EXPECT_EQ((*a)->folded(), 3);
  EXPECT_EQ((*a)->Merge(**other_norm).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*a)->Merge(**other_inner).code(), absl::StatusCode::kInvalidArgument);
  CoordinateMedian plain(2);
  EXPECT_EQ((*a)->Merge(plain).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plain.Merge(**a).code(), absl::StatusCode::kInvalidArgument);
  // Medians of {0.6, 0, 0.1} and {0.8, 1, 0}.
  ExpectNear(AggregateOrDie(**a), {0.1, 0.8}, 1e-7);
}

TEST(ClippedAggregatorTest, CreateRefusesBadNormsAndNoInner) {
  for (double bad : {0.0, -1.0, std::numeric_limits<double>::infinity(),
                     std::numeric_limits<double>::quiet_NaN()}) {
    EXPECT_EQ(ClippedAggregator::Create(std::make_unique<WeightedMean>(2), bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_EQ(ClippedAggregator::Create(nullptr, 1.0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Every rule the factory makes, with parameters that suit a round of 12 updates.
struct Rule {
  std::string rule;
  RuleParams params;
};

std::vector<Rule> AllRules() {
  RuleParams krum;
  krum.byzantine = 2;
  RuleParams multi = krum;
  multi.multi_krum = 3;
  RuleParams trimmed;
  trimmed.trim_fraction = 0.25;
  RuleParams clipped_median;
  clipped_median.clip_norm = 2.0;
  return {{"fedavg", {}},     {"mean", {}},   {"median", {}},
          {"trimmed_mean", trimmed}, {"krum", krum}, {"multi_krum", multi},
          {"median", clipped_median}};
}

TEST(AllRulesTest, FoldRefusesBadUpdates) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (const Rule& r : AllRules()) {
    SCOPED_TRACE(r.rule);
    auto aggregator = Make(r.rule, 4, r.params);
    ASSERT_NE(aggregator, nullptr);
    const absl::Status wrong_size = aggregator->Fold({FlatTensor{1, 2, 3}, 1});
    EXPECT_EQ(wrong_size.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(wrong_size.message(), "update has 3 values; the model has 4");
    EXPECT_EQ(aggregator->Fold({FlatTensor{1, 2, 3, 4}, 0}).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(aggregator->Fold({FlatTensor{1, 2, 3, 4}, -3}).code(),
              absl::StatusCode::kInvalidArgument);
    for (float bad : {nan, inf, -inf}) {
      const absl::Status status = aggregator->Fold({FlatTensor{1, 2, bad, 4}, 1});
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(status.message(), HasSubstr("value 2"));
    }
    EXPECT_EQ(aggregator->folded(), 0);
  }
}

TEST(AllRulesTest, AggregateRefusesAnEmptyRound) {
  for (const Rule& r : AllRules()) {
    auto aggregator = Make(r.rule, 4, r.params);
    ASSERT_NE(aggregator, nullptr);
    EXPECT_EQ(aggregator->Aggregate().status().code(), absl::StatusCode::kFailedPrecondition)
        << r.rule;
  }
}

TEST(AllRulesTest, MergeEqualsFoldingEverythingIntoOne) {
  const auto updates = RandomUpdates(12, 64, 77);
  const std::vector<FlatTensor> first(updates.begin(), updates.begin() + 5);
  const std::vector<FlatTensor> second(updates.begin() + 5, updates.end());
  for (const Rule& r : AllRules()) {
    SCOPED_TRACE(r.rule);
    auto whole = Make(r.rule, 64, r.params);
    auto a = Make(r.rule, 64, r.params);
    auto b = Make(r.rule, 64, r.params);
    ASSERT_TRUE(whole && a && b);
    for (size_t i = 0; i < updates.size(); ++i) {
      ASSERT_TRUE(whole->Fold({updates[i], static_cast<int64_t>(i + 1)}).ok());
      RoundAggregator& part = i < first.size() ? *a : *b;
      ASSERT_TRUE(part.Fold({updates[i], static_cast<int64_t>(i + 1)}).ok());
    }
    ASSERT_TRUE(a->Merge(*b).ok());
    EXPECT_EQ(a->folded(), 12);
    EXPECT_EQ(b->folded(), 7);
    ExpectNear(AggregateOrDie(*a), AggregateOrDie(*whole), 1e-12);
  }
}

TEST(AllRulesTest, ConcurrentFoldsMatchSequentialFolds) {
  constexpr int kThreads = 4, kPerThread = 10;
  const auto updates = RandomUpdates(kThreads * kPerThread, 64, 31);
  for (const Rule& r : AllRules()) {
    SCOPED_TRACE(r.rule);
    auto sequential = Make(r.rule, 64, r.params);
    auto concurrent = Make(r.rule, 64, r.params);
    ASSERT_TRUE(sequential && concurrent);
    FoldAll(*sequential, updates);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = t; i < kThreads * kPerThread; i += kThreads) {
          ASSERT_TRUE(concurrent->Fold({updates[i], static_cast<int64_t>(i % 5 + 1)}).ok());
        }
      });
    }
    for (std::thread& th : threads) th.join();
    EXPECT_EQ(concurrent->folded(), kThreads * kPerThread);
    ExpectNear(AggregateOrDie(*concurrent), AggregateOrDie(*sequential), 1e-12);
  }
}

TEST(AllRulesTest, MergeRefusesOtherRulesParametersSizesAndItself) {
  const std::vector<Rule> rules = AllRules();
  for (size_t i = 0; i < rules.size(); ++i) {
    SCOPED_TRACE(rules[i].rule);
    auto aggregator = Make(rules[i].rule, 4, rules[i].params);
    ASSERT_NE(aggregator, nullptr);
    EXPECT_EQ(aggregator->Merge(*aggregator).code(), absl::StatusCode::kInvalidArgument);
    auto other_size = Make(rules[i].rule, 5, rules[i].params);
    EXPECT_EQ(aggregator->Merge(*other_size).code(), absl::StatusCode::kInvalidArgument);
    for (size_t j = 0; j < rules.size(); ++j) {
      auto other = Make(rules[j].rule, 4, rules[j].params);
      const bool same = aggregator->name() == other->name();
      EXPECT_EQ(aggregator->Merge(*other).ok(), same) << rules[j].rule;
    }
  }
  RuleParams a, b;
  a.trim_fraction = 0.1;
  b.trim_fraction = 0.2;
  EXPECT_EQ(Make("trimmed_mean", 4, a)->Merge(*Make("trimmed_mean", 4, b)).code(),
            absl::StatusCode::kInvalidArgument);
  a.byzantine = 1;
  b.byzantine = 2;
  EXPECT_EQ(Make("krum", 4, a)->Merge(*Make("krum", 4, b)).code(),
            absl::StatusCode::kInvalidArgument);
  b.byzantine = 1;
  a.multi_krum = 2;
  b.multi_krum = 3;
  EXPECT_EQ(Make("multi_krum", 4, a)->Merge(*Make("multi_krum", 4, b)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MakeRoundAggregatorTest, NamesEachRule) {
  RuleParams multi;
  multi.multi_krum = 2;
  RuleParams clipped;
  clipped.clip_norm = 1.5;
  EXPECT_EQ(Make("fedavg", 3)->name(), "mean");
  EXPECT_EQ(Make("mean", 3)->name(), "mean");
  EXPECT_EQ(Make("median", 3)->name(), "median");
  EXPECT_EQ(Make("trimmed_mean", 3)->name(), "trimmed_mean");
  EXPECT_EQ(Make("krum", 3)->name(), "krum");
  EXPECT_EQ(Make("krum", 3, multi)->name(), "multi_krum");
  EXPECT_EQ(Make("multi_krum", 3, multi)->name(), "multi_krum");
  EXPECT_EQ(Make("trimmed_mean", 3, clipped)->name(), "clip(trimmed_mean)");
}

TEST(MakeRoundAggregatorTest, UnknownRuleListsTheKnownOnes) {
  const absl::Status status = MakeRoundAggregator("bulyan", 3, {}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  for (const char* known : {"fedavg", "mean", "median", "trimmed_mean", "krum", "multi_krum"}) {
    EXPECT_THAT(status.message(), HasSubstr(known));
  }
}

TEST(MakeRoundAggregatorTest, RefusesBadParameters) {
  RuleParams trim;
  trim.trim_fraction = 0.5;
  RuleParams byzantine;
  byzantine.byzantine = -1;
  RuleParams no_multi;  // multi_krum needs an m
  RuleParams negative_multi;
  negative_multi.multi_krum = -2;
  RuleParams clip;
  clip.clip_norm = -1;
  const struct {
    std::string rule;
    RuleParams params;
  } bad[] = {{"trimmed_mean", trim},  {"krum", byzantine},    {"multi_krum", no_multi},
             {"krum", negative_multi}, {"mean", clip}};
  for (const auto& b : bad) {
    EXPECT_EQ(MakeRoundAggregator(b.rule, 3, b.params).status().code(),
              absl::StatusCode::kInvalidArgument)
        << b.rule;
  }
  EXPECT_EQ(MakeRoundAggregator("mean", -1, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::cloud::aggregation
