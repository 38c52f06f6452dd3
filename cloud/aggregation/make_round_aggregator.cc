#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cloud/aggregation/robust.h"
#include "common/status/status.h"

namespace fedge::cloud::aggregation {
namespace {

absl::StatusOr<std::unique_ptr<RoundAggregator>> MakeRule(const std::string& rule,
                                                          int64_t num_elements,
                                                          const RuleParams& params) {
  if (rule == "fedavg" || rule == "mean") return std::make_unique<WeightedMean>(num_elements);
  if (rule == "median") return std::make_unique<CoordinateMedian>(num_elements);
  if (rule == "trimmed_mean") return TrimmedMean::Create(num_elements, params.trim_fraction);
  if (rule == "krum") {
    return Krum::Create(num_elements, params.byzantine,
                        params.multi_krum == 0 ? 1 : params.multi_krum);
  }
  if (rule == "multi_krum") {
    if (params.multi_krum < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "multi_krum needs the number of updates to average; multi_krum is ", params.multi_krum));
    }
    return Krum::Create(num_elements, params.byzantine, params.multi_krum);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown aggregation rule \"", rule,
                   "\"; known rules: fedavg, mean, median, trimmed_mean, krum, multi_krum"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<RoundAggregator>> MakeRoundAggregator(const std::string& rule,
                                                                     int64_t num_elements,
                                                                     const RuleParams& params) {
  if (num_elements < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a model cannot have ", num_elements, " values"));
  }
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<RoundAggregator> aggregator,
                         MakeRule(rule, num_elements, params));
  if (params.clip_norm == 0) return aggregator;
  return ClippedAggregator::Create(std::move(aggregator), params.clip_norm);
}

}  // namespace fedge::cloud::aggregation
