#include "cloud/aggregation/robust.h"
#include "cloud/aggregation/update_checks.h"
#include "common/status/status.h"

namespace fedge::cloud::aggregation {

WeightedMean::WeightedMean(int64_t num_elements)
    : num_elements_(num_elements), weighted_sum_(static_cast<size_t>(num_elements), 0.0) {}

absl::Status WeightedMean::Fold(const UpdateView& update) {
  FEDGE_RETURN_IF_ERROR(internal::CheckUpdate(update, num_elements_));
  const double w = static_cast<double>(update.num_samples);
  MutexLock lock(&mu_);
  // Plain pointers and a fixed count: written over the members, GCC leaves this loop scalar.
  double* sum = weighted_sum_.data();
  const float* delta = update.delta.data();
  const size_t n = weighted_sum_.size();
  for (size_t i = 0; i < n; ++i) sum[i] += w * delta[i];
  total_weight_ += w;
  ++folded_;
  return absl::OkStatus();
}

absl::Status WeightedMean::Merge(RoundAggregator& other) {
  FEDGE_ASSIGN_OR_RETURN(WeightedMean * source, internal::MergeSource(this, other));
  FEDGE_RETURN_IF_ERROR(internal::CheckMergeSize(source->num_elements_, num_elements_));
  std::vector<double> sum;
  double weight;
  int folded;
  {
    MutexLock lock(&source->mu_);
    sum = source->weighted_sum_;
    weight = source->total_weight_;
    folded = source->folded_;
  }
  MutexLock lock(&mu_);
  for (size_t i = 0; i < weighted_sum_.size(); ++i) weighted_sum_[i] += sum[i];
  total_weight_ += weight;
  folded_ += folded;
  return absl::OkStatus();
}

int WeightedMean::folded() const {
  MutexLock lock(&mu_);
  return folded_;
}

absl::StatusOr<std::vector<double>> WeightedMean::Aggregate() {
  MutexLock lock(&mu_);
  if (folded_ == 0) return absl::FailedPreconditionError("no update was folded this round");
  std::vector<double> out(weighted_sum_.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = weighted_sum_[i] / total_weight_;
  return out;
}

}  // namespace fedge::cloud::aggregation
