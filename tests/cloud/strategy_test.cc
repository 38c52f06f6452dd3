#include <cmath>
#include <memory>
#include <thread>
#include <vector>

#include "cloud/aggregation/strategy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::cloud::aggregation {
namespace {

std::unique_ptr<Strategy> Make(const StrategyConfig& config, int64_t n) {
  auto s = Strategy::Create(config, n);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

std::unique_ptr<Strategy> FedAvg(int64_t n) { return Make({}, n); }

TEST(FedAvgTest, WeightsUpdatesBySampleCount) {
  auto avg_ptr = FedAvg(3);
  Strategy& avg = *avg_ptr;
  FlatTensor a = {1, 2, 3}, b = {4, 0, -3};
  ASSERT_TRUE(avg.Fold({a, 100}).ok());
  ASSERT_TRUE(avg.Fold({b, 300}).ok());
  FlatTensor base = {10, 10, 10};
  auto out = avg.Finish(base);
  ASSERT_TRUE(out.ok());
  // base + (100 a + 300 b) / 400, by hand.
  EXPECT_FLOAT_EQ((*out)[0], 10 + (100 * 1 + 300 * 4) / 400.0f);
  EXPECT_FLOAT_EQ((*out)[1], 10 + (100 * 2 + 300 * 0) / 400.0f);
  EXPECT_FLOAT_EQ((*out)[2], 10 + (100 * 3 + 300 * -3) / 400.0f);
  EXPECT_EQ(avg.folded(), 2);
}

TEST(FedAvgTest, EqualWeightsGiveThePlainMean) {
  auto avg_ptr = FedAvg(2);
  Strategy& avg = *avg_ptr;
  for (float v : {1.0f, 2.0f, 6.0f}) ASSERT_TRUE(avg.Fold({FlatTensor{v, -v}, 7}).ok());
  auto out = avg.Finish(FlatTensor{0, 0});
  ASSERT_TRUE(out.ok());
  EXPECT_FLOAT_EQ((*out)[0], 3.0f);
  EXPECT_FLOAT_EQ((*out)[1], -3.0f);
}

TEST(FedAvgTest, RefusesWrongSizeAndNonPositiveSamples) {
  auto avg_ptr = FedAvg(2);
  Strategy& avg = *avg_ptr;
  FlatTensor wrong = {1, 2, 3};
  EXPECT_EQ(avg.Fold({wrong, 10}).code(), absl::StatusCode::kInvalidArgument);
  FlatTensor ok = {1, 2};
  EXPECT_EQ(avg.Fold({ok, 0}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(avg.Fold({ok, -5}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(avg.folded(), 0);
  EXPECT_EQ(avg.Finish(ok).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(FedAvgTest, ConcurrentFoldsSumExactly) {
  constexpr int kThreads = 4, kPerThread = 50;
  auto avg_ptr = FedAvg(4);
  Strategy& avg = *avg_ptr;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&avg, t] {
      for (int i = 0; i < kPerThread; ++i) {
        FlatTensor d(4, static_cast<float>(t + 1));
        ASSERT_TRUE(avg.Fold({d, t + 1}).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(avg.folded(), kThreads * kPerThread);
  auto out = avg.Finish(FlatTensor(4, 0.0f));
  ASSERT_TRUE(out.ok());
  // sum_t w_t * d_t / sum_t w_t with w_t = d_t = t + 1: (1+4+9+16) / (1+2+3+4) = 3.
  for (float v : *out) EXPECT_FLOAT_EQ(v, 3.0f);
}

TEST(StrategyTest, BeginRoundDiscardsTheLastRound) {
  auto s = FedAvg(2);
  ASSERT_TRUE(s->Fold({FlatTensor{100, 100}, 1}).ok());
  s->BeginRound();
  EXPECT_EQ(s->folded(), 0);
  ASSERT_TRUE(s->Fold({FlatTensor{1, -1}, 1}).ok());
  auto out = s->Finish(FlatTensor{0, 0});
  ASSERT_TRUE(out.ok());
  EXPECT_FLOAT_EQ((*out)[0], 1.0f);
  EXPECT_FLOAT_EQ((*out)[1], -1.0f);
}

TEST(StrategyTest, NamesDescribeTheConfiguration) {
  EXPECT_EQ(FedAvg(1)->name(), "fedavg");
  StrategyConfig prox;
  prox.proximal_mu = 0.5;
  EXPECT_EQ(Make(prox, 1)->name(), "fedprox(mu=0.5)");
  StrategyConfig robust;
  robust.proximal_mu = 1;
  robust.rule = "krum";
  robust.params.byzantine = 1;
  robust.params.clip_norm = 2;
  robust.server_optimizer = "fedadam";
  EXPECT_EQ(Make(robust, 1)->name(), "fedprox(mu=1)+krum(f=1)+clip(2)+fedadam(lr=0.01)");
  StrategyConfig trimmed;
  trimmed.rule = "trimmed_mean";
  trimmed.params.trim_fraction = 0.2;
  EXPECT_EQ(Make(trimmed, 1)->name(), "trimmed_mean(0.2)");
}

TEST(StrategyTest, RefusesBadConfigurationsByName) {
  StrategyConfig c;
  c.rule = "average";
  auto s = Strategy::Create(c, 4);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), ::testing::HasSubstr("average"));
  c = {};
  c.server_optimizer = "fedsgdm";
  EXPECT_EQ(Strategy::Create(c, 4).status().code(), absl::StatusCode::kInvalidArgument);
  c = {};
  c.rule = "trimmed_mean";
  c.params.trim_fraction = 0.5;
  EXPECT_EQ(Strategy::Create(c, 4).status().code(), absl::StatusCode::kInvalidArgument);
  c = {};
  c.proximal_mu = -1;
  EXPECT_EQ(Strategy::Create(c, 4).status().code(), absl::StatusCode::kInvalidArgument);
}

// The median rule through the strategy: by hand, the median of {1, 5, 100} is 5.
TEST(StrategyTest, RobustRuleIgnoresAnOutlier) {
  StrategyConfig c;
  c.rule = "median";
  auto s = Make(c, 1);
  for (float v : {1.0f, 5.0f, 100.0f}) ASSERT_TRUE(s->Fold({FlatTensor{v}, 10}).ok());
  auto out = s->Finish(FlatTensor{0});
  ASSERT_TRUE(out.ok());
  EXPECT_FLOAT_EQ((*out)[0], 5.0f);
}

// FedAdam over three rounds, with its state saved and loaded into a new strategy after the
// second, ends where one uninterrupted strategy ends; both equal a hand loop of Reddi et al.'s
// update.
TEST(StrategyTest, ServerOptimizerStateSurvivesARestart) {
  StrategyConfig c;
  c.server_optimizer = "fedadam";
  c.server.server_lr = 0.1;
  const std::vector<float> deltas = {0.5f, -0.25f, 1.0f};
  auto run = [&](Strategy& s, FlatTensor x, int from, int to) {
    for (int r = from; r < to; ++r) {
      s.BeginRound();
      EXPECT_TRUE(s.Fold({FlatTensor{deltas[r]}, 3}).ok());
      auto next = s.Finish(x);
      EXPECT_TRUE(next.ok());
      x = *next;
    }
    return x;
  };
  auto whole = Make(c, 1);
  const FlatTensor straight = run(*whole, FlatTensor{1.0f}, 0, 3);

  auto first = Make(c, 1);
  const FlatTensor mid = run(*first, FlatTensor{1.0f}, 0, 2);
  auto second = Make(c, 1);
  ASSERT_TRUE(second->LoadState(first->SaveState()).ok());
  const FlatTensor resumed = run(*second, mid, 2, 3);

  double x = 1, m = 0, v = 1e-6;  // v_{-1} = tau^2
  for (float d : deltas) {
    m = 0.9 * m + 0.1 * d;
    v = 0.99 * v + 0.01 * d * d;
    x += 0.1 * m / (std::sqrt(v) + 1e-3);
  }
  EXPECT_NEAR(straight[0], x, 1e-5);
  EXPECT_FLOAT_EQ(resumed[0], straight[0]);
}

TEST(StalenessScaleTest, FollowsOneOverOnePlusStalenessToTheExponent) {
  EXPECT_DOUBLE_EQ(StalenessScale(0, 0.5), 1.0);
  EXPECT_DOUBLE_EQ(StalenessScale(3, 0.5), 0.5);  // 1 / sqrt(4)
  EXPECT_DOUBLE_EQ(StalenessScale(1, 1.0), 0.5);
  EXPECT_DOUBLE_EQ(StalenessScale(9, 2.0), 0.01);
  EXPECT_DOUBLE_EQ(StalenessScale(5, 0.0), 1.0);   // exponent 0: no discount
  EXPECT_DOUBLE_EQ(StalenessScale(-2, 0.5), 1.0);  // never above a fresh update
}

TEST(StrategyTest, MergeAddsAPartialAggregate) {
  auto a = FedAvg(1), b = FedAvg(1);
  ASSERT_TRUE(a->Fold({FlatTensor{2}, 1}).ok());
  ASSERT_TRUE(b->Fold({FlatTensor{8}, 3}).ok());
  ASSERT_TRUE(a->Merge(*b).ok());
  EXPECT_EQ(a->Merge(*a).code(), absl::StatusCode::kInvalidArgument);
  auto out = a->Finish(FlatTensor{0});
  ASSERT_TRUE(out.ok());
  EXPECT_FLOAT_EQ((*out)[0], (2 * 1 + 8 * 3) / 4.0f);  // by hand
}

}  // namespace
}  // namespace fedge::cloud::aggregation
