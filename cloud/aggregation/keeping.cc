#include <typeinfo>

#include "absl/strings/str_cat.h"
#include "cloud/aggregation/robust.h"
#include "cloud/aggregation/update_checks.h"
#include "common/status/status.h"

namespace fedge::cloud::aggregation {

absl::Status KeepingAggregator::Fold(const UpdateView& update) {
  FEDGE_RETURN_IF_ERROR(internal::CheckUpdate(update, num_elements_));
  FlatTensor copy(update.delta.begin(), update.delta.end());
  MutexLock lock(&mu_);
  updates_.push_back(std::move(copy));
  return absl::OkStatus();
}

absl::Status KeepingAggregator::Merge(RoundAggregator& other) {
  if (&other == this) return absl::InvalidArgumentError("cannot merge an aggregator into itself");
  auto* source = dynamic_cast<KeepingAggregator*>(&other);
  if (source == nullptr || typeid(*source) != typeid(*this)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot merge a ", other.name(), " aggregator into a ", name()));
  }
  FEDGE_RETURN_IF_ERROR(CheckSameParameters(*source));
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

int KeepingAggregator::folded() const {
  MutexLock lock(&mu_);
  return static_cast<int>(updates_.size());
}

absl::StatusOr<std::vector<double>> KeepingAggregator::Aggregate() {
  MutexLock lock(&mu_);
  if (updates_.empty()) return absl::FailedPreconditionError("no update was folded this round");
  return AggregateKept(updates_);
}

}  // namespace fedge::cloud::aggregation
