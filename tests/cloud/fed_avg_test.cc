#include <thread>
#include <vector>

#include "cloud/aggregation/strategy.h"
#include "gtest/gtest.h"

namespace fedge::cloud::aggregation {
namespace {

TEST(FedAvgTest, WeightsUpdatesBySampleCount) {
  FedAvg avg(3);
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
  FedAvg avg(2);
  for (float v : {1.0f, 2.0f, 6.0f}) ASSERT_TRUE(avg.Fold({FlatTensor{v, -v}, 7}).ok());
  auto out = avg.Finish(FlatTensor{0, 0});
  ASSERT_TRUE(out.ok());
  EXPECT_FLOAT_EQ((*out)[0], 3.0f);
  EXPECT_FLOAT_EQ((*out)[1], -3.0f);
}

TEST(FedAvgTest, RefusesWrongSizeAndNonPositiveSamples) {
  FedAvg avg(2);
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
  FedAvg avg(4);
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

}  // namespace
}  // namespace fedge::cloud::aggregation
