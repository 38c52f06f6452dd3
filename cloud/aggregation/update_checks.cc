#include "cloud/aggregation/update_checks.h"

#include <cmath>

#include "common/tensor/f32.h"

namespace fedge::cloud::aggregation::internal {

absl::Status CheckSamplesAndValues(const UpdateView& update) {
  if (update.num_samples <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("update reports ", update.num_samples, " samples; it must be positive"));
  }
  if (AllFinite(update.delta)) return absl::OkStatus();
  for (size_t i = 0; i < update.delta.size(); ++i) {
    if (!std::isfinite(update.delta[i])) {
      return absl::InvalidArgumentError(absl::StrCat("update value ", i, " is ", update.delta[i],
                                                     "; values must be finite"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckUpdate(const UpdateView& update, int64_t num_elements) {
  if (static_cast<int64_t>(update.delta.size()) != num_elements) {
    return absl::InvalidArgumentError(absl::StrCat("update has ", update.delta.size(),
                                                   " values; the model has ", num_elements));
  }
  return CheckSamplesAndValues(update);
}

absl::Status CheckMergeSize(int64_t theirs, int64_t ours) {
  if (theirs != ours) {
    return absl::InvalidArgumentError(absl::StrCat("cannot merge an aggregator of ", theirs,
                                                   " values into one of ", ours));
  }
  return absl::OkStatus();
}

}  // namespace fedge::cloud::aggregation::internal
