#include "edge/serving/health.h"

#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"

namespace fedge::edge::serving {
namespace {

v1::VersionRef Ref(int64_t version, const std::string& sha) {
  v1::VersionRef r;
  r.set_model("m");
  r.set_version(version);
  r.set_sha256(sha);
  return r;
}

TEST(HealthTrackerTest, CountsPredictionsFailuresAndFeedbackPerVersion) {
  testing::FakeClock clock;
  HealthTracker health({&clock});
  const auto v1 = Ref(1, "aaa"), v2 = Ref(2, "bbb");
  for (int i = 0; i < 10; ++i) {
    health.RecordPrediction(v1, "p" + std::to_string(i), /*label=*/i % 2, absl::Milliseconds(i));
  }
  health.RecordFailure(v1, absl::Milliseconds(1));
  health.RecordPrediction(v2, "q", 0, absl::Milliseconds(1));
  clock.Advance(absl::Seconds(3));
  // Labels for p0..p3: p0 (0) and p2 (0) right, p1 (1) wrong given 0, p3 (1) right.
  EXPECT_TRUE(health.RecordFeedback("p0", 0)->correct);
  EXPECT_FALSE(health.RecordFeedback("p1", 0)->correct);
  EXPECT_TRUE(health.RecordFeedback("p2", 0)->correct);
  auto r3 = health.RecordFeedback("p3", 1);
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(r3->version.version(), 1);
  auto reports = health.Reports({{"m", v1}});
  ASSERT_EQ(reports.size(), 1u);
  const v1::HealthReport& r = reports[0];
  EXPECT_EQ(r.predictions(), 11);
  EXPECT_EQ(r.errors(), 1);
  EXPECT_EQ(r.feedback(), 4);
  EXPECT_EQ(r.feedback_correct(), 3);
  EXPECT_EQ(r.window_ms(), 3000);
  // Latencies 0..9 ms and 1 ms: the 99th percentile of 11 samples is the largest.
  EXPECT_DOUBLE_EQ(r.p99_latency_ms(), 9.0);
  EXPECT_EQ(health.Reports({{"m", v2}})[0].predictions(), 1);  // v2 counted apart
}

TEST(HealthTrackerTest, ABatchCountsEachRowWithItsOwnLabel) {
  HealthTracker health({});
  const auto v = Ref(1, "a");
  const std::vector<std::string> ids = {"b0", "b1", "b2"};
  const std::vector<int32_t> labels = {0, 1, 2};
  health.RecordPredictions(v, ids, labels, absl::Milliseconds(2));
  EXPECT_TRUE(health.RecordFeedback("b0", 0)->correct);
  EXPECT_TRUE(health.RecordFeedback("b1", 1)->correct);
  EXPECT_FALSE(health.RecordFeedback("b2", 0)->correct);
  EXPECT_EQ(health.ModelOf("b2"), "m");
  const v1::HealthReport r = health.Reports({{"m", v}})[0];
  EXPECT_EQ(r.predictions(), 3);
  EXPECT_EQ(r.feedback(), 3);
  EXPECT_EQ(r.feedback_correct(), 2);
}

TEST(HealthTrackerTest, FeedbackOutlivesAResetOfItsVersion) {
  HealthTracker health({});
  health.RecordPrediction(Ref(1, "a"), "p", 1, absl::Milliseconds(1));
  health.Reset("a");
  auto r = health.RecordFeedback("p", 1);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->correct);
}

TEST(HealthTrackerTest, UnknownAndRepeatedFeedbackAreRefused) {
  HealthTracker health({});
  health.RecordPrediction(Ref(1, "a"), "p", 0, absl::Milliseconds(1));
  EXPECT_EQ(health.RecordFeedback("nope", 0).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(health.RecordFeedback("p", 0).ok());
  EXPECT_EQ(health.RecordFeedback("p", 0).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST(HealthTrackerTest, OnlyTheNewestPredictionsAreRemembered) {
  HealthTracker::Options o;
  o.max_remembered_predictions = 3;
  HealthTracker health(o);
  for (int i = 0; i < 5; ++i) health.RecordPrediction(Ref(1, "a"), std::to_string(i), 0, {});
  EXPECT_EQ(health.RecordFeedback("0", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(health.RecordFeedback("1", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(health.RecordFeedback("4", 0).ok());
}

TEST(HealthTrackerTest, ResetStartsAVersionsCountsOver) {
  HealthTracker health({});
  const auto v = Ref(1, "a");
  health.RecordFailure(v, absl::Milliseconds(5));
  health.Reset("a");
  health.RecordPrediction(v, "p", 0, absl::Milliseconds(1));
  auto r = health.Reports({{"m", v}})[0];
  EXPECT_EQ(r.predictions(), 1);
  EXPECT_EQ(r.errors(), 0);
}

}  // namespace
}  // namespace fedge::edge::serving
