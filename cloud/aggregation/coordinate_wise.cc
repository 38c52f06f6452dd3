// The coordinate-wise rules: median and trimmed mean. Both keep every update and, for each
// coordinate, select order statistics over the updates' values with std::nth_element.

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/types/span.h"
#include "cloud/aggregation/robust.h"
#include "cloud/aggregation/update_checks.h"
#include "common/status/status.h"

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

CoordinateMedian::CoordinateMedian(int64_t num_elements) : num_elements_(num_elements) {}

absl::Status CoordinateMedian::Fold(const UpdateView& update) {
  FEDGE_RETURN_IF_ERROR(internal::CheckUpdate(update, num_elements_));
  FlatTensor copy(update.delta.begin(), update.delta.end());
  MutexLock lock(&mu_);
  updates_.push_back(std::move(copy));
  return absl::OkStatus();
}

absl::Status CoordinateMedian::Merge(RoundAggregator& other) {
  FEDGE_ASSIGN_OR_RETURN(CoordinateMedian * source, internal::MergeSource(this, other));
  FEDGE_RETURN_IF_ERROR(internal::CheckMergeSize(source->num_elements_, num_elements_));
  std::vector<FlatTensor> theirs;
  {
    MutexLock lock(&source->mu_);
    theirs = source->updates_;
  }
  MutexLock lock(&mu_);
  for (FlatTensor& u : theirs) updates_.push_back(std::move(u));
  return absl::OkStatus();
}

int CoordinateMedian::folded() const {
  MutexLock lock(&mu_);
  return static_cast<int>(updates_.size());
}

absl::StatusOr<std::vector<double>> CoordinateMedian::Aggregate() {
  MutexLock lock(&mu_);
  if (updates_.empty()) return absl::FailedPreconditionError("no update was folded this round");
  std::vector<double> out(static_cast<size_t>(num_elements_));
  ForEachColumn(updates_, out.size(),
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

TrimmedMean::TrimmedMean(int64_t num_elements, double trim_fraction)
    : num_elements_(num_elements), trim_fraction_(trim_fraction) {}

absl::Status TrimmedMean::Fold(const UpdateView& update) {
  FEDGE_RETURN_IF_ERROR(internal::CheckUpdate(update, num_elements_));
  FlatTensor copy(update.delta.begin(), update.delta.end());
  MutexLock lock(&mu_);
  updates_.push_back(std::move(copy));
  return absl::OkStatus();
}

absl::Status TrimmedMean::Merge(RoundAggregator& other) {
  FEDGE_ASSIGN_OR_RETURN(TrimmedMean * source, internal::MergeSource(this, other));
  if (source->trim_fraction_ != trim_fraction_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot merge a trimmed_mean with trim fraction ", source->trim_fraction_,
                     " into one with ", trim_fraction_));
  }
  FEDGE_RETURN_IF_ERROR(internal::CheckMergeSize(source->num_elements_, num_elements_));
  std::vector<FlatTensor> theirs;
  {
    MutexLock lock(&source->mu_);
    theirs = source->updates_;
  }
  MutexLock lock(&mu_);
  for (FlatTensor& u : theirs) updates_.push_back(std::move(u));
  return absl::OkStatus();
}

int TrimmedMean::folded() const {
  MutexLock lock(&mu_);
  return static_cast<int>(updates_.size());
}

absl::StatusOr<std::vector<double>> TrimmedMean::Aggregate() {
  MutexLock lock(&mu_);
  const size_t n = updates_.size();
  if (n == 0) return absl::FailedPreconditionError("no update was folded this round");
  const auto trim =
      static_cast<size_t>(std::floor(trim_fraction_ * static_cast<double>(n) + 1e-9));
  if (2 * trim >= n) {
    return absl::FailedPreconditionError(
        absl::StrCat("trimming ", trim, " values from each end of ", n, " leaves none"));
  }
  std::vector<double> out(static_cast<size_t>(num_elements_));
  ForEachColumn(updates_, out.size(), [&out, trim](size_t j, absl::Span<float> column) {
    out[j] = TrimmedMeanOf(column, trim);
  });
  return out;
}

}  // namespace fedge::cloud::aggregation
