#include "edge/drift/drift.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace fedge::edge::drift {
namespace {

// ---- independent reference computations (no code from drift.cc) ----

// PSI straight from the formula, each proportion floored at 1e-4 (the documented smoothing).
double PsiByFormula(const std::vector<double>& e, const std::vector<double>& a) {
  double s = 0;
  for (size_t i = 0; i < e.size(); ++i) {
    const double ei = std::max(e[i], 1e-4), ai = std::max(a[i], 1e-4);
    s += (ai - ei) * std::log(ai / ei);
  }
  return s;
}

// KS by brute force: evaluate both empirical CDFs at every observed point.
template <typename A, typename B>
double KsBruteForce(const std::vector<A>& a, const std::vector<B>& b) {
  double d = 0;
  auto cdf = [](const auto& v, double x) {
    double c = 0;
    for (auto y : v) c += (static_cast<double>(y) <= x);
    return c / v.size();
  };
  for (auto x : a) d = std::max(d, std::abs(cdf(a, x) - cdf(b, x)));
  for (auto x : b) d = std::max(d, std::abs(cdf(a, x) - cdf(b, x)));
  return d;
}

// Bin index by linear scan: the number of edges <= x.
int BinByScan(const std::vector<double>& edges, double x) {
  int b = 0;
  for (double e : edges) b += (e <= x);
  return b;
}

// Standard normals from mt19937_64 by Box–Muller.
class Normals {
 public:
  explicit Normals(uint64_t seed) : rng_(seed) {}
  double Next() {
    if (have_spare_) {
      have_spare_ = false;
      return spare_;
    }
    double u1;
    do {
      u1 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    } while (u1 <= 0);
    const double u2 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2 * std::log(u1));
    const double t = 2 * M_PI * u2;
    spare_ = r * std::sin(t);
    have_spare_ = true;
    return r * std::cos(t);
  }

 private:
  std::mt19937_64 rng_;
  double spare_ = 0;
  bool have_spare_ = false;
};

// ---- statistics ----

TEST(DriftStatsTest, PsiOfIdenticalDistributionsIsZero) {
  EXPECT_EQ(Psi({0.1, 0.2, 0.3, 0.4}, {0.1, 0.2, 0.3, 0.4}), 0.0);
  EXPECT_EQ(Psi({0.5, 0.0, 0.5}, {0.5, 0.0, 0.5}), 0.0);
}

TEST(DriftStatsTest, PsiMatchesHandComputedExample) {
  // (0.5-0.25)ln(0.5/0.25) + 0 + (0.25-0.5)ln(0.25/0.5) = 0.5 ln 2.
  EXPECT_NEAR(Psi({0.25, 0.25, 0.5}, {0.5, 0.25, 0.25}), 0.34657359027997264, 1e-12);
  const std::vector<double> e = {0.1, 0.2, 0.3, 0.4}, a = {0.25, 0.25, 0.25, 0.25};
  EXPECT_NEAR(Psi(e, a), PsiByFormula(e, a), 1e-12);
}

TEST(DriftStatsTest, PsiFloorsEmptyBinsAtEpsilon) {
  const double psi = Psi({0.5, 0.5}, {1.0, 0.0});
  EXPECT_TRUE(std::isfinite(psi));
  EXPECT_NEAR(psi, 0.5 * std::log(2.0) + (1e-4 - 0.5) * std::log(1e-4 / 0.5), 1e-12);
}

TEST(DriftStatsTest, PsiOfMismatchedSizesIsNan) { EXPECT_TRUE(std::isnan(Psi({1.0}, {0.5, 0.5}))); }

TEST(DriftStatsTest, KsOfIdenticalSamplesIsZero) {
  EXPECT_EQ(KsStatistic({3, 1, 2, 2, 5}, {5, 2, 1, 3, 2}), 0.0);
}

TEST(DriftStatsTest, KsOfDisjointSamplesIsOne) {
  EXPECT_EQ(KsStatistic({1, 2, 3}, {10, 11, 12, 13}), 1.0);
  EXPECT_EQ(KsStatistic({10, 11}, {1, 2, 3}), 1.0);
}

TEST(DriftStatsTest, KsMatchesHandComputedExamplesWithTies) {
  EXPECT_DOUBLE_EQ(KsStatistic({1, 2, 3, 4}, {3, 4, 5, 6}), 0.5);
  // At x = 1: F_a = 2/3, F_b = 1/3.
  EXPECT_DOUBLE_EQ(KsStatistic({1, 1, 2}, {1, 2, 2}), 1.0 / 3);
  EXPECT_EQ(KsStatistic({}, {1, 2}), 0.0);
}

TEST(DriftStatsTest, KsMatchesBruteForceOnRandomSamples) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<double> a(1 + rng() % 60), b(1 + rng() % 60);
    // Small integer values force many ties.
    for (double& x : a) x = static_cast<double>(rng() % 12);
    for (double& x : b) x = static_cast<double>(rng() % 12) + (trial % 3);
    EXPECT_NEAR(KsStatistic(a, b), KsBruteForce(a, b), 1e-12) << "trial " << trial;
  }
}

// ---- reference profile ----

TEST(DriftProfileTest, BuildPlacesEdgesAtDecilesWithEqualProportions) {
  std::vector<float> rows;
  for (int i = 0; i < 100; ++i) rows.push_back(static_cast<float>((i * 37) % 100));  // 0..99
  auto p = ReferenceProfile::Build(rows, 1, {}, 0);
  ASSERT_TRUE(p.ok()) << p.status();
  const auto& f = p->feature(0);
  EXPECT_EQ(f.edges, (std::vector<double>{10, 20, 30, 40, 50, 60, 70, 80, 90}));
  ASSERT_EQ(f.proportions.size(), 10u);
  for (double q : f.proportions) EXPECT_DOUBLE_EQ(q, 0.1);
  EXPECT_EQ(f.sketch.size(), 100u);  // fewer rows than kKsSketchSize: all kept, sorted
  EXPECT_TRUE(std::is_sorted(f.sketch.begin(), f.sketch.end()));
  EXPECT_EQ(p->reference_rows(), 100);
  EXPECT_EQ(p->num_classes(), 0);
}

TEST(DriftProfileTest, BuildDeduplicatesTiedEdges) {
  std::vector<float> rows(80, 0.0f);
  for (int v = 1; v <= 20; ++v) rows.push_back(static_cast<float>(v));
  auto p = ReferenceProfile::Build(rows, 1, {}, 0);
  ASSERT_TRUE(p.ok()) << p.status();
  // Sorted order statistics at 10, 20, ..., 70 are all 0; at 80 it is 1 and at 90 it is 11.
  EXPECT_EQ(p->feature(0).edges, (std::vector<double>{0, 1, 11}));
  const auto& q = p->feature(0).proportions;
  ASSERT_EQ(q.size(), 4u);
  EXPECT_DOUBLE_EQ(q[0], 0.0);
  EXPECT_DOUBLE_EQ(q[1], 0.8);
  EXPECT_DOUBLE_EQ(q[2], 0.1);
  EXPECT_DOUBLE_EQ(q[3], 0.1);
}

TEST(DriftProfileTest, BuildRecordsPredictionDistribution) {
  std::vector<float> rows(8, 1.0f);
  auto p = ReferenceProfile::Build(rows, 2, {0, 2, 2, 2}, 3);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->prediction_proportions(), (std::vector<double>{0.25, 0.0, 0.75}));
}

TEST(DriftProfileTest, BuildRefusesBadInput) {
  const std::vector<float> six(6, 1.0f);
  EXPECT_EQ(ReferenceProfile::Build({}, 2, {}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReferenceProfile::Build(six, 4, {}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReferenceProfile::Build(six, 0, {}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReferenceProfile::Build(six, 2, {}, 0, /*bins=*/1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReferenceProfile::Build(six, 2, {0, 1}, 2).status().code(),  // 3 rows, 2 labels
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReferenceProfile::Build(six, 2, {0, 1, 2}, 2).status().code(),  // label 2 of 2
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReferenceProfile::Build(six, 2, {0, 0, 0}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> nan = six;
  nan[3] = std::nanf("");
  EXPECT_EQ(ReferenceProfile::Build(nan, 2, {}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

ReferenceProfile RandomProfile(uint64_t seed, int n, int features, int classes) {
  Normals normals(seed);
  std::vector<float> rows(static_cast<size_t>(n) * features);
  for (float& x : rows) x = static_cast<float>(normals.Next() * 3.7 + 0.1);
  std::vector<int64_t> labels(n);
  for (int i = 0; i < n; ++i) labels[i] = (i * 7) % classes;
  auto p = ReferenceProfile::Build(rows, features, labels, classes);
  EXPECT_TRUE(p.ok()) << p.status();
  return *p;
}

TEST(DriftProfileTest, SerializeParseRoundTripsExactly) {
  const ReferenceProfile p = RandomProfile(11, 1234, 5, 3);
  const std::string text = p.Serialize();
  auto q = ReferenceProfile::Parse(text);
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_EQ(q->num_features(), 5);
  EXPECT_EQ(q->num_classes(), 3);
  EXPECT_EQ(q->reference_rows(), 1234);
  EXPECT_EQ(q->prediction_proportions(), p.prediction_proportions());
  for (int f = 0; f < 5; ++f) {
    EXPECT_EQ(q->feature(f).edges, p.feature(f).edges);
    EXPECT_EQ(q->feature(f).proportions, p.feature(f).proportions);
    EXPECT_EQ(q->feature(f).sketch, p.feature(f).sketch);
    EXPECT_EQ(q->feature(f).sketch.size(), static_cast<size_t>(kKsSketchSize));
  }
  EXPECT_EQ(q->Serialize(), text);
  std::cout << "[drift] serialized profile, 5 features: " << text.size() << " bytes\n";
}

TEST(DriftProfileTest, ParseRefusesMalformedInput) {
  const std::string good = RandomProfile(12, 300, 2, 2).Serialize();
  ASSERT_TRUE(ReferenceProfile::Parse(good).ok());
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  const std::vector<std::string> bad = {
      "",
      "garbage",
      "{\"json\": true}",
      good.substr(0, good.size() / 2),                      // truncated
      good + " 1",                                          // trailing data
      replace("fedge-drift-profile 1", "fedge-drift-profile 2"),  // unknown version
      replace("features 2", "features 3"),                  // count mismatch
      replace("features 2", "features 999999999"),          // absurd count
      replace("edges 9 ", "edges 9 nan "),                  // non-finite
      replace("predictions 2 ", "predictions 2 0.9 "),      // shares no longer sum to 1
      replace("feature 1", "feature 0"),                    // wrong index
      replace("sketch 200 ", "sketch 200 1e30 "),           // unsorted sketch
  };
  for (const std::string& s : bad) {
    auto p = ReferenceProfile::Parse(s);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument)
        << "accepted: " << s.substr(0, 80);
  }
  // Edges that are not strictly increasing.
  std::string s = good;
  const size_t at = s.find("edges 9 ") + 8;
  const size_t end = s.find(' ', at);
  const std::string first = s.substr(at, end - at);
  s.insert(at, first + " ");
  s.replace(s.find("edges 9 "), 8, "edges 10 ");
  EXPECT_EQ(ReferenceProfile::Parse(s).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- monitor ----

TEST(DriftMonitorTest, WindowStatisticsMatchIndependentComputation) {
  const ReferenceProfile profile = RandomProfile(21, 2000, 3, 4);
  Monitor::Options options;
  options.window = 250;
  Monitor monitor(profile, options);
  Normals normals(22);
  std::vector<std::vector<float>> values(3);
  std::vector<int64_t> class_counts(4, 0);
  std::optional<WindowResult> result;
  for (int i = 0; i < 250; ++i) {
    float row[3];
    for (int f = 0; f < 3; ++f) {
      row[f] = static_cast<float>(normals.Next() * 3.7 + 0.1 + 0.8 * f);  // feature f shifted
      values[f].push_back(row[f]);
    }
    const int64_t label = i % 3 == 0 ? 1 : 3;
    ++class_counts[label];
    result = monitor.Observe(row, label);
    EXPECT_EQ(result.has_value(), i == 249);
  }
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->window_index, 0);
  for (int f = 0; f < 3; ++f) {
    const auto& feat = profile.feature(f);
    std::vector<double> actual(feat.proportions.size(), 0);
    for (float x : values[f]) actual[BinByScan(feat.edges, x)] += 1.0 / 250;
    EXPECT_NEAR(result->psi[f], PsiByFormula(feat.proportions, actual), 1e-9) << f;
    EXPECT_NEAR(result->ks[f], KsBruteForce(feat.sketch, values[f]), 1e-12) << f;
  }
  std::vector<double> pred(4);
  for (int c = 0; c < 4; ++c) pred[c] = class_counts[c] / 250.0;
  EXPECT_NEAR(result->prediction_psi, PsiByFormula(profile.prediction_proportions(), pred),
              1e-9);
  const WindowResult last = monitor.Last();
  EXPECT_EQ(last.window_index, 0);
  EXPECT_EQ(last.psi, result->psi);
}

// One feature, reference uniform on [0, 1).
ReferenceProfile UniformProfile() {
  std::vector<float> rows;
  for (int i = 0; i < 1000; ++i) rows.push_back(static_cast<float>(i) / 1000);
  return *ReferenceProfile::Build(rows, 1, {}, 0);
}

// Feeds one window: stationary (uniform) or shifted far away. Returns the result.
WindowResult FeedWindow(Monitor& monitor, int window, bool shifted) {
  std::optional<WindowResult> r;
  for (int i = 0; i < window; ++i) {
    const float x = static_cast<float>(i) / window + (shifted ? 5.0f : 0.0f);
    r = monitor.Observe(&x, 0);
  }
  return *r;
}

TEST(DriftMonitorTest, ReportsOncePerSustainedStreakThenRearms) {
  Monitor::Options options;
  options.window = 100;
  options.sustained_windows = 2;
  Monitor monitor(UniformProfile(), options);
  const std::vector<bool> shifted = {true, false, true, true, true, true, true, false, false};
  std::vector<int64_t> reports;
  for (bool s : shifted) {
    const WindowResult r = FeedWindow(monitor, 100, s);
    EXPECT_EQ(r.drifted, s) << r.window_index;
    EXPECT_EQ(r.drifted_features, s ? std::vector<int>{0} : std::vector<int>{});
    if (r.report) reports.push_back(r.window_index);
  }
  // Window 0 is an isolated drift; the streak 2..6 reports at its 2nd and 4th windows.
  EXPECT_EQ(reports, (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(monitor.Last().window_index, 8);
}

TEST(DriftMonitorTest, SustainedWindowsOfOneReportsEveryDriftedWindow) {
  Monitor::Options options;
  options.window = 50;
  options.sustained_windows = 1;
  Monitor monitor(UniformProfile(), options);
  EXPECT_TRUE(FeedWindow(monitor, 50, true).report);
  EXPECT_TRUE(FeedWindow(monitor, 50, true).report);
  EXPECT_FALSE(FeedWindow(monitor, 50, false).report);
}

TEST(DriftMonitorTest, KsThresholdFlagsDriftWhenEnabled) {
  Monitor::Options options;
  options.window = 100;
  options.psi_threshold = 1e9;  // PSI alone never fires
  Monitor off(UniformProfile(), options);
  EXPECT_FALSE(FeedWindow(off, 100, true).drifted);
  options.ks_threshold = 0.5;
  Monitor on(UniformProfile(), options);
  const WindowResult r = FeedWindow(on, 100, true);
  EXPECT_DOUBLE_EQ(r.ks[0], 1.0);  // disjoint from the reference
  EXPECT_TRUE(r.drifted);
  EXPECT_FALSE(FeedWindow(on, 100, false).drifted);
}

TEST(DriftMonitorTest, NanInputsLandInLastBinAndShowAsDrift) {
  Monitor::Options options;
  options.window = 100;
  Monitor monitor(UniformProfile(), options);
  std::optional<WindowResult> r;
  const float nan = std::nanf("");
  for (int i = 0; i < 100; ++i) r = monitor.Observe(&nan, 0);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->drifted);
  EXPECT_DOUBLE_EQ(r->ks[0], 1.0);
}

TEST(DriftMonitorTest, ConcurrentObserversCompleteEveryWindow) {
  Monitor::Options options;
  options.window = 100;
  Monitor monitor(UniformProfile(), options);
  std::vector<std::thread> threads;
  std::vector<int> windows(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2500; ++i) {
        const float x = static_cast<float>((i * 7 + t) % 1000) / 1000;
        if (monitor.Observe(&x, 0)) ++windows[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(windows[0] + windows[1] + windows[2] + windows[3], 100);
  EXPECT_EQ(monitor.Last().window_index, 99);
}

// ---- statistical acceptance ----

constexpr int kFeatures = 8;
constexpr int kReferenceRows = 5000;
constexpr int kWindow = 500;

Monitor MakeNormalMonitor(Normals& normals) {
  std::vector<float> rows(static_cast<size_t>(kReferenceRows) * kFeatures);
  std::vector<int64_t> labels(kReferenceRows);
  for (int r = 0; r < kReferenceRows; ++r) {
    for (int f = 0; f < kFeatures; ++f) rows[r * kFeatures + f] = normals.Next();
    labels[r] = rows[r * kFeatures] > 0;
  }
  auto profile = ReferenceProfile::Build(rows, kFeatures, labels, 2);
  EXPECT_TRUE(profile.ok()) << profile.status();
  Monitor::Options options;
  options.window = kWindow;
  options.psi_threshold = 0.2;
  options.sustained_windows = 2;
  return Monitor(*std::move(profile), options);
}

std::optional<WindowResult> ObserveNormalRow(Monitor& monitor, Normals& normals, double shift) {
  float row[kFeatures];
  for (int f = 0; f < kFeatures; ++f) row[f] = static_cast<float>(normals.Next());
  row[2] += static_cast<float>(shift);  // the shift hits features 2 and 5
  row[5] += static_cast<float>(shift);
  return monitor.Observe(row, row[0] > 0);
}

TEST(DriftAcceptanceTest, OneSigmaShiftOnTwoFeaturesReportsWithinThreeWindows) {
  for (uint64_t seed : {1, 2, 3}) {
    Normals normals(seed);
    Monitor monitor = MakeNormalMonitor(normals);
    // 4.5 stationary windows, so the shift starts mid-window.
    const int stationary_rows = 4 * kWindow + kWindow / 2;
    for (int i = 0; i < stationary_rows; ++i) {
      auto r = ObserveNormalRow(monitor, normals, 0);
      ASSERT_FALSE(r && r->report) << "seed " << seed << ": report before the shift";
    }
    int rows_after_shift = 0, windows_after_shift = 0;
    bool reported = false;
    while (!reported && rows_after_shift < 10 * kWindow) {
      ++rows_after_shift;
      auto r = ObserveNormalRow(monitor, normals, 1.0);
      if (r) {
        ++windows_after_shift;  // windows that closed after the shift began (first is mixed)
        reported = r->report;
        if (reported) {
          EXPECT_EQ(r->drifted_features, (std::vector<int>{2, 5})) << "seed " << seed;
        }
      }
    }
    std::cout << "[drift] seed " << seed << ": 1-sigma shift reported at window "
              << windows_after_shift << " after it began (" << rows_after_shift
              << " rows; shift began mid-window)\n";
    ::testing::Test::RecordProperty("detect_window_seed" + std::to_string(seed),
                                    windows_after_shift);
    EXPECT_TRUE(reported) << "seed " << seed;
    EXPECT_LE(rows_after_shift, 3 * kWindow) << "seed " << seed;
  }
}

TEST(DriftAcceptanceTest, AtMostOneFalseReportPerThousandStationaryWindows) {
  for (uint64_t seed : {1, 2, 3}) {
    Normals normals(seed + 100);
    Monitor monitor = MakeNormalMonitor(normals);
    int reports = 0, drifted = 0;
    double max_psi = 0, max_ks = 0;
    for (int w = 0; w < 1000; ++w) {
      std::optional<WindowResult> r;
      for (int i = 0; i < kWindow; ++i) r = ObserveNormalRow(monitor, normals, 0);
      ASSERT_TRUE(r.has_value());
      reports += r->report;
      drifted += r->drifted;
      max_psi = std::max(max_psi, *std::max_element(r->psi.begin(), r->psi.end()));
      max_ks = std::max(max_ks, *std::max_element(r->ks.begin(), r->ks.end()));
    }
    std::cout << "[drift] seed " << seed << ": " << reports
              << " false reports in 1000 stationary windows (" << drifted
              << " single drifted windows; max feature PSI " << max_psi << ", max KS " << max_ks
              << ")\n";
    ::testing::Test::RecordProperty("false_reports_seed" + std::to_string(seed), reports);
    EXPECT_LE(reports, 1) << "seed " << seed;
  }
}

}  // namespace
}  // namespace fedge::edge::drift
