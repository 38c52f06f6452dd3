#ifndef FEDGE_CLOUD_AGGREGATION_RULES_H_
#define FEDGE_CLOUD_AGGREGATION_RULES_H_

// The two halves of a server-side aggregation strategy, apart from the job that drives them:
//
// - A RoundAggregator combines one round's client updates (deltas, local − base) into the
//   round's aggregate delta. Fold() takes updates from many threads; Merge() adds a partial
//   aggregate of the same rule made elsewhere (hierarchical aggregation); Aggregate() is
//   called once, after the last Fold or Merge.
// - A ServerOptimizer turns the aggregate delta into the next global model. It may keep state
//   across rounds (moments), which SaveState/LoadState persist with the job so that a resumed
//   job continues with the same state.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/codec/codec.h"
#include "common/tensor/flat.h"

namespace fedge::cloud::aggregation {

// One validated client update: the change from the round's base model (local − base), and
// the number of samples it was trained on.
struct UpdateView {
  absl::Span<const float> delta;
  int64_t num_samples = 0;
};

class RoundAggregator {
 public:
  virtual ~RoundAggregator() = default;
  virtual std::string name() const = 0;
  virtual int64_t num_elements() const = 0;
  // INVALID_ARGUMENT on a size mismatch, a non-positive sample count or a non-finite value.
  virtual absl::Status Fold(const UpdateView& update) = 0;
  // Folds an update as it came off the wire, multiplied by `scale` (FedBuff's staleness
  // weight; 1 otherwise). The payload must have passed codec::Inspect as finite, which is
  // where the caller checks its norm. The default decodes it whole and calls Fold; the
  // weighted mean decodes block by block straight into its running sum.
  virtual absl::Status FoldEncoded(absl::string_view payload, const codec::CodecParams& params,
                                   int64_t num_samples, double scale = 1.0);
  // Adds everything `other` folded. INVALID_ARGUMENT unless `other` is the same rule with the
  // same parameters and size.
  virtual absl::Status Merge(RoundAggregator& other) = 0;
  virtual int folded() const = 0;
  // The round's aggregate delta. FAILED_PRECONDITION if too few updates were folded for the
  // rule (none, or fewer than a robust rule needs).
  virtual absl::StatusOr<std::vector<double>> Aggregate() = 0;
};

class ServerOptimizer {
 public:
  virtual ~ServerOptimizer() = default;
  virtual std::string name() const = 0;
  // The next global model from the round's base and aggregate delta (same sizes, else
  // INVALID_ARGUMENT). Updates the optimizer's state.
  virtual absl::StatusOr<FlatTensor> Apply(absl::Span<const float> base,
                                           absl::Span<const double> delta) = 0;
  // Opaque bytes; empty for a stateless optimizer. LoadState refuses bytes of another
  // optimizer or model size with INVALID_ARGUMENT.
  virtual std::string SaveState() const = 0;
  virtual absl::Status LoadState(absl::string_view state) = 0;
};

}  // namespace fedge::cloud::aggregation

#endif  // FEDGE_CLOUD_AGGREGATION_RULES_H_
