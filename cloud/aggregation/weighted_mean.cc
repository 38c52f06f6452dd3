#include <cmath>

#include "absl/strings/str_cat.h"
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

absl::Status WeightedMean::FoldEncoded(absl::string_view payload,
                                       const codec::CodecParams& params, int64_t num_samples,
                                       double scale) {
  FEDGE_RETURN_IF_ERROR(internal::CheckSamplesAndValues({{}, num_samples}));
  if (!(scale > 0) || !std::isfinite(scale)) {
    return absl::InvalidArgumentError(absl::StrCat("scale is ", scale, "; it must be positive"));
  }
  const double w = static_cast<double>(num_samples);
  MutexLock lock(&mu_);
  // AccumulateInto checks the whole payload before it touches the sum.
  FEDGE_RETURN_IF_ERROR(
      codec::AccumulateInto(payload, params, w * scale, absl::MakeSpan(weighted_sum_)));
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
