#include "absl/strings/str_cat.h"
#include "cloud/aggregation/strategy.h"

namespace fedge::cloud::aggregation {

FedAvg::FedAvg(int64_t num_elements) : weighted_sum_(static_cast<size_t>(num_elements), 0.0) {}

absl::Status FedAvg::Fold(const UpdateView& update) {
  if (update.num_samples <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("update reports ", update.num_samples, " samples; it must be positive"));
  }
  MutexLock lock(&mu_);
  if (update.delta.size() != weighted_sum_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("update has ", update.delta.size(),
                                                   " values; the model has ",
                                                   weighted_sum_.size()));
  }
  const double w = static_cast<double>(update.num_samples);
  for (size_t i = 0; i < weighted_sum_.size(); ++i) weighted_sum_[i] += w * update.delta[i];
  total_weight_ += w;
  ++folded_;
  return absl::OkStatus();
}

absl::StatusOr<FlatTensor> FedAvg::Finish(absl::Span<const float> base) {
  MutexLock lock(&mu_);
  if (folded_ == 0) return absl::FailedPreconditionError("no update was folded this round");
  if (base.size() != weighted_sum_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("base has ", base.size(), " values; expected ",
                                                   weighted_sum_.size()));
  }
  FlatTensor out(base.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<float>(static_cast<double>(base[i]) + weighted_sum_[i] / total_weight_);
  }
  return out;
}

int FedAvg::folded() const {
  MutexLock lock(&mu_);
  return folded_;
}

}  // namespace fedge::cloud::aggregation
