#include "common/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedge::data {

absl::Status Dataset::Append(const Dataset& other) {
  if (other.feature_names != feature_names) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot append a dataset with features [", absl::StrJoin(other.feature_names, ", "),
        "] to one with features [", absl::StrJoin(feature_names, ", "), "]"));
  }
  features.insert(features.end(), other.features.begin(), other.features.end());
  labels.insert(labels.end(), other.labels.begin(), other.labels.end());
  return absl::OkStatus();
}

namespace {

void CopyRows(const Dataset& from, const std::vector<int64_t>& rows, Dataset* to) {
  const int64_t width = from.num_features();
  to->feature_names = from.feature_names;
  to->features.clear();
  to->labels.clear();
  to->features.reserve(rows.size() * static_cast<size_t>(width));
  to->labels.reserve(rows.size());
  for (int64_t row : rows) {
    const auto begin = from.features.begin() + row * width;
    to->features.insert(to->features.end(), begin, begin + width);
    to->labels.push_back(from.labels[static_cast<size_t>(row)]);
  }
}

}  // namespace

void Split(const Dataset& all, double holdout_fraction, uint64_t seed, Dataset* train,
           Dataset* holdout) {
  const int64_t n = all.size();
  const double fraction = std::clamp(holdout_fraction, 0.0, 1.0);
  const auto holdout_rows = static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));

  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  // Fisher-Yates with our own index draw: std::shuffle and std::uniform_int_distribution are
  // implementation-defined, and the split must be the same on every build.
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t bound = static_cast<uint64_t>(i) + 1;
    // Rejection sampling keeps the draw unbiased.
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do {
      r = rng();
    } while (r >= limit);
    std::swap(order[static_cast<size_t>(i)], order[r % bound]);
  }

  std::vector<int64_t> holdout_order(order.begin(), order.begin() + holdout_rows);
  std::vector<int64_t> train_order(order.begin() + holdout_rows, order.end());
  // Keep the original row order inside each part: it reads better and costs nothing.
  std::sort(holdout_order.begin(), holdout_order.end());
  std::sort(train_order.begin(), train_order.end());
  CopyRows(all, train_order, train);
  CopyRows(all, holdout_order, holdout);
}

FeatureStats ComputeStats(const Dataset& data) {
  const int64_t width = data.num_features();
  const int64_t n = data.size();
  FeatureStats stats;
  stats.mean.assign(static_cast<size_t>(width), 0.0f);
  stats.std.assign(static_cast<size_t>(width), 1e-6f);
  if (n == 0) return stats;
  // Two passes in double: sensor values such as 1480 rpm make one-pass float variance lose
  // most of its digits.
  std::vector<double> sum(static_cast<size_t>(width), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < width; ++j) sum[j] += data.features[i * width + j];
  }
  std::vector<double> mean(static_cast<size_t>(width));
  for (int64_t j = 0; j < width; ++j) mean[j] = sum[j] / static_cast<double>(n);
  std::vector<double> sq(static_cast<size_t>(width), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < width; ++j) {
      const double d = data.features[i * width + j] - mean[j];
      sq[j] += d * d;
    }
  }
  for (int64_t j = 0; j < width; ++j) {
    stats.mean[j] = static_cast<float>(mean[j]);
    // Population standard deviation: these stats normalize inputs, they do not estimate.
    const double sd = std::sqrt(sq[j] / static_cast<double>(n));
    stats.std[j] = static_cast<float>(std::max(sd, 1e-6));
  }
  return stats;
}

}  // namespace fedge::data
