#ifndef FEDGE_CLOUD_AGGREGATION_UPDATE_CHECKS_H_
#define FEDGE_CLOUD_AGGREGATION_UPDATE_CHECKS_H_

// Checks shared by the round aggregators; not part of the library's interface.

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cloud/aggregation/rules.h"

namespace fedge::cloud::aggregation::internal {

// INVALID_ARGUMENT if the sample count is not positive or a value is not finite.
absl::Status CheckSamplesAndValues(const UpdateView& update);

// As CheckSamplesAndValues, and INVALID_ARGUMENT unless the update has num_elements values.
absl::Status CheckUpdate(const UpdateView& update, int64_t num_elements);

// INVALID_ARGUMENT unless the sizes of two aggregators to merge agree.
absl::Status CheckMergeSize(int64_t theirs, int64_t ours);

// `other` as the concrete type T of `self`, for Merge(). INVALID_ARGUMENT if it is another
// rule, or `self` itself.
template <typename T>
absl::StatusOr<T*> MergeSource(T* self, RoundAggregator& other) {
  if (&other == self) {
    return absl::InvalidArgumentError("cannot merge an aggregator into itself");
  }
  T* source = dynamic_cast<T*>(&other);
  if (source == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot merge a ", other.name(), " aggregator into a ", self->name()));
  }
  return source;
}

}  // namespace fedge::cloud::aggregation::internal

#endif  // FEDGE_CLOUD_AGGREGATION_UPDATE_CHECKS_H_
