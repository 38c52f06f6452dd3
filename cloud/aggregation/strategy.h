#ifndef FEDGE_CLOUD_AGGREGATION_STRATEGY_H_
#define FEDGE_CLOUD_AGGREGATION_STRATEGY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/sync/mutex.h"
#include "common/tensor/flat.h"

namespace fedge::cloud::aggregation {

// One validated client update: the change from the round's base model (local − base), and
// the number of samples it was trained on.
struct UpdateView {
  absl::Span<const float> delta;
  int64_t num_samples = 0;
};

// Folds client updates into a new global model, one round at a time. Fold() may be called
// from many threads at once; Finish() is called once, after the last Fold().
class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const = 0;
  // INVALID_ARGUMENT on a size mismatch or a non-positive sample count.
  virtual absl::Status Fold(const UpdateView& update) = 0;
  // The new global model, given the round's base. FAILED_PRECONDITION if nothing was folded.
  virtual absl::StatusOr<FlatTensor> Finish(absl::Span<const float> base) = 0;
  virtual int folded() const = 0;
};

// Federated averaging (McMahan et al. 2017): the new global model is the base plus the
// sample-weighted mean of the deltas. Each update is folded into a running float64 sum, so
// memory is O(model size), independent of the number of participants.
class FedAvg : public Strategy {
 public:
  explicit FedAvg(int64_t num_elements);
  std::string name() const override { return "fedavg"; }
  absl::Status Fold(const UpdateView& update) override;
  absl::StatusOr<FlatTensor> Finish(absl::Span<const float> base) override;
  int folded() const override;

 private:
  mutable Mutex mu_;
  std::vector<double> weighted_sum_ ABSL_GUARDED_BY(mu_);
  double total_weight_ ABSL_GUARDED_BY(mu_) = 0;
  int folded_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fedge::cloud::aggregation

#endif  // FEDGE_CLOUD_AGGREGATION_STRATEGY_H_
