#include <cmath>
#include <utility>

#include "cloud/aggregation/robust.h"
#include "cloud/aggregation/update_checks.h"
#include "common/status/status.h"

namespace fedge::cloud::aggregation {

absl::StatusOr<std::unique_ptr<ClippedAggregator>> ClippedAggregator::Create(
    std::unique_ptr<RoundAggregator> inner, double max_norm) {
  if (inner == nullptr) return absl::InvalidArgumentError("clipping needs an inner aggregator");
  if (!(max_norm > 0 && std::isfinite(max_norm))) {
    return absl::InvalidArgumentError(
        absl::StrCat("the clipping norm is ", max_norm, "; it must be positive and finite"));
  }
  return std::unique_ptr<ClippedAggregator>(new ClippedAggregator(std::move(inner), max_norm));
}

ClippedAggregator::ClippedAggregator(std::unique_ptr<RoundAggregator> inner, double max_norm)
    : inner_(std::move(inner)), max_norm_(max_norm) {}

std::string ClippedAggregator::name() const { return absl::StrCat("clip(", inner_->name(), ")"); }

absl::Status ClippedAggregator::Fold(const UpdateView& update) {
  // The inner aggregator checks the size.
  FEDGE_RETURN_IF_ERROR(internal::CheckSamplesAndValues(update));
  double squared_norm = 0;
  for (float v : update.delta) squared_norm += static_cast<double>(v) * v;
  const double norm = std::sqrt(squared_norm);
  if (norm <= max_norm_) return inner_->Fold(update);

  const double scale = max_norm_ / norm;
  FlatTensor scaled(update.delta.size());
  for (size_t i = 0; i < scaled.size(); ++i) {
    scaled[i] = static_cast<float>(static_cast<double>(update.delta[i]) * scale);
  }
  FEDGE_RETURN_IF_ERROR(inner_->Fold({scaled, update.num_samples}));
  MutexLock lock(&mu_);
  ++clipped_;
  return absl::OkStatus();
}

absl::Status ClippedAggregator::Merge(RoundAggregator& other) {
  FEDGE_ASSIGN_OR_RETURN(ClippedAggregator * source, internal::MergeSource(this, other));
  if (source->max_norm_ != max_norm_) {
    return absl::InvalidArgumentError(absl::StrCat("cannot merge updates clipped to norm ",
                                                   source->max_norm_, " into ones clipped to ",
                                                   max_norm_));
  }
  FEDGE_RETURN_IF_ERROR(inner_->Merge(*source->inner_));
  const int clipped = source->clipped();
  MutexLock lock(&mu_);
  clipped_ += clipped;
  return absl::OkStatus();
}

int ClippedAggregator::folded() const { return inner_->folded(); }

absl::StatusOr<std::vector<double>> ClippedAggregator::Aggregate() { return inner_->Aggregate(); }

int ClippedAggregator::clipped() const {
  MutexLock lock(&mu_);
  return clipped_;
}

}  // namespace fedge::cloud::aggregation
