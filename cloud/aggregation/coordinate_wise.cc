// The coordinate-wise rules: median and trimmed mean. Both keep every update and, for each
// coordinate, select order statistics over the updates' values with std::nth_element.

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/types/span.h"
#include "cloud/aggregation/robust.h"
#include "absl/strings/str_cat.h"

namespace fedge::cloud::aggregation {
namespace {

// Calls fn(j, column) for each coordinate j in order, where `column` holds the updates'
// values at j in a scratch buffer that fn may reorder. Coordinates are gathered a block at a
// time, so that each update is read contiguously rather than with a stride of the model size.
template <typename Fn>
void ForEachColumn(const std::vector<FlatTensor>& updates, size_t num_elements, Fn fn) {
  constexpr size_t kBlock = 64;
  const size_t n = updates.size();
  std::vector<float> scratch(kBlock * n);
  for (size_t start = 0; start < num_elements; start += kBlock) {
    const size_t width = std::min(kBlock, num_elements - start);
    for (size_t i = 0; i < n; ++i) {
      const float* row = updates[i].data() + start;
      for (size_t c = 0; c < width; ++c) scratch[c * n + i] = row[c];
    }
    for (size_t c = 0; c < width; ++c) {
      fn(start + c, absl::Span<float>(scratch.data() + c * n, n));
    }
  }
}

double MedianOf(absl::Span<float> values) {
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + mid, values.end());
  const double upper = values[mid];
  if (values.size() % 2 == 1) return upper;
  const double lower = *std::max_element(values.begin(), values.begin() + mid);
  return (lower + upper) / 2;
}

// The mean of `values` without its `trim` smallest and `trim` largest; 2 · trim < size.
double TrimmedMeanOf(absl::Span<float> values, size_t trim) {
  const size_t n = values.size();
  if (trim > 0) {
    // The trim smallest move to [0, trim), then the trim largest to [n − trim, n).
    std::nth_element(values.begin(), values.begin() + trim, values.end());
    std::nth_element(values.begin() + trim, values.begin() + (n - trim), values.end());
  }
  double sum = 0;
  for (size_t i = trim; i < n - trim; ++i) sum += values[i];
  return sum / static_cast<double>(n - 2 * trim);
}

}  // namespace

absl::StatusOr<std::vector<double>> CoordinateMedian::AggregateKept(
    const std::vector<FlatTensor>& updates) const {
  std::vector<double> out(static_cast<size_t>(num_elements_));
  ForEachColumn(updates, out.size(),
                [&out](size_t j, absl::Span<float> column) { out[j] = MedianOf(column); });
  return out;
}

absl::StatusOr<std::unique_ptr<TrimmedMean>> TrimmedMean::Create(int64_t num_elements,
                                                                 double trim_fraction) {
  if (num_elements < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a model cannot have ", num_elements, " values"));
  }
  if (!(trim_fraction >= 0 && trim_fraction < 0.5)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trimmed_mean's trim fraction is ", trim_fraction, "; it must be in [0, 0.5)"));
  }
  return std::unique_ptr<TrimmedMean>(new TrimmedMean(num_elements, trim_fraction));
}

absl::Status TrimmedMean::CheckSameParameters(const KeepingAggregator& other) const {
  const auto& source = static_cast<const TrimmedMean&>(other);
  if (source.trim_fraction_ != trim_fraction_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot merge a trimmed_mean with trim fraction ", source.trim_fraction_,
                     " into one with ", trim_fraction_));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> TrimmedMean::AggregateKept(
    const std::vector<FlatTensor>& updates) const {
  const size_t n = updates.size();
  const auto trim =
      static_cast<size_t>(std::floor(trim_fraction_ * static_cast<double>(n) + 1e-9));
  if (2 * trim >= n) {
    return absl::FailedPreconditionError(
        absl::StrCat("trimming ", trim, " values from each end of ", n, " leaves none"));
  }
  std::vector<double> out(static_cast<size_t>(num_elements_));
  ForEachColumn(updates, out.size(), [&out, trim](size_t j, absl::Span<float> column) {
    out[j] = TrimmedMeanOf(column, trim);
  });
  return out;
}

}  // namespace fedge::cloud::aggregation
