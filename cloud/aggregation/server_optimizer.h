#ifndef FEDGE_CLOUD_AGGREGATION_SERVER_OPTIMIZER_H_
#define FEDGE_CLOUD_AGGREGATION_SERVER_OPTIMIZER_H_

// Server optimizers: how a round's aggregate delta Δ_t (the mean of local − base) moves the
// global model. All arithmetic is float64; only the returned model is float32.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "cloud/aggregation/rules.h"
#include "common/sync/mutex.h"
#include "common/tensor/flat.h"

namespace fedge::cloud::aggregation {

// x_{t+1} = x_t + lr · Δ_t. With lr = 1 this is FedAvg's step (the model becomes the mean of
// the clients' models). Stateless: SaveState() is "" and LoadState() accepts only "".
//
// name() is "none" when lr == 1 (no server optimizer beyond applying the mean) and "sgd" for
// any other lr (server SGD on the pseudo-gradient −Δ_t). Thread-safe.
class PlainServerOptimizer : public ServerOptimizer {
 public:
  // INVALID_ARGUMENT unless server_lr is finite and positive.
  static absl::StatusOr<std::unique_ptr<PlainServerOptimizer>> Create(double server_lr = 1.0);

  // server_lr must be finite and positive (CHECKed); use Create() for untrusted values.
  explicit PlainServerOptimizer(double server_lr = 1.0);

  std::string name() const override;
  double server_lr() const { return server_lr_; }
  // INVALID_ARGUMENT if the sizes differ or a delta value is not finite.
  absl::StatusOr<FlatTensor> Apply(absl::Span<const float> base,
                                   absl::Span<const double> delta) override;
  std::string SaveState() const override { return ""; }
  // INVALID_ARGUMENT unless `state` is empty.
  absl::Status LoadState(absl::string_view state) override;

 private:
  const double server_lr_;
};

// Hyperparameters of the adaptive server optimizers.
//
// Reddi et al., "Adaptive Federated Optimization" (ICLR 2021), Algorithm 2, requires
// β1, β2 ∈ [0, 1) and an adaptivity τ > 0, with v_{−1} ≥ τ². Their experiments use β1 = 0.9 and
// β2 = 0.99 and tune η and τ per task on log-scale grids, so no single η or τ is "the" default.
// η = 0.01 and τ = 1e-3 are the defaults of Flower's FedAdam/FedYogi strategies, which implement
// the same algorithm (flwr.server.strategy.FedYogi documentation).
struct AdaptiveOptions {
  double server_lr = 0.01;  // η
  double beta1 = 0.9;       // first-moment decay
  double beta2 = 0.99;      // second-moment decay (unused by FedAdagrad, still validated)
  double tau = 1e-3;        // adaptivity: floor of the denominator, and √v_{−1}
};

// FedAdagrad, FedAdam and FedYogi (Reddi et al. 2021, Algorithm 2), per coordinate in float64:
//
//   m_t = β1·m_{t−1} + (1−β1)·Δ_t
//   FedAdagrad: v_t = v_{t−1} + Δ_t²
//   FedAdam:    v_t = β2·v_{t−1} + (1−β2)·Δ_t²
//   FedYogi:    v_t = v_{t−1} − (1−β2)·Δ_t²·sign(v_{t−1} − Δ_t²)
//   x_{t+1}   = x_t + η·m_t / (√v_t + τ)
//
// with m_{−1} = 0 and v_{−1} = τ², and no bias correction (as in the paper). Memory is two
// float64 vectors of the model's size. Thread-safe; calls are serialized.
class AdaptiveServerOptimizer : public ServerOptimizer {
 public:
  enum class Kind { kAdagrad, kAdam, kYogi };

  // INVALID_ARGUMENT, naming the field, unless server_lr > 0, beta1 and beta2 are in [0, 1),
  // tau > 0 (all finite) and num_elements >= 0.
  static absl::StatusOr<std::unique_ptr<AdaptiveServerOptimizer>> Create(
      Kind kind, int64_t num_elements, const AdaptiveOptions& options = {});

  // "fedadagrad", "fedadam" or "fedyogi".
  std::string name() const override;
  Kind kind() const { return kind_; }
  const AdaptiveOptions& options() const { return options_; }

  // INVALID_ARGUMENT if base or delta is not of the optimizer's size or a delta value is not
  // finite; the state is then unchanged.
  absl::StatusOr<FlatTensor> Apply(absl::Span<const float> base,
                                   absl::Span<const double> delta) override;

  // Binary, little-endian: "FSVO", format version (u32), name length (u32) and name, element
  // count (u64), rounds applied (u64), then m and v (float64 each). Hyperparameters are not
  // saved; they come from the job's configuration.
  std::string SaveState() const override;
  // INVALID_ARGUMENT on bytes of another format or optimizer, another element count, or
  // truncated or trailing bytes; the state is then unchanged.
  absl::Status LoadState(absl::string_view state) override;

  // For inspection: rounds applied so far, and copies of the moments.
  int64_t rounds() const;
  std::vector<double> first_moment() const;
  std::vector<double> second_moment() const;

 private:
  AdaptiveServerOptimizer(Kind kind, int64_t num_elements, const AdaptiveOptions& options);

  const Kind kind_;
  const AdaptiveOptions options_;
  mutable Mutex mu_;
  const size_t num_elements_;
  std::vector<double> m_ ABSL_GUARDED_BY(mu_);
  std::vector<double> v_ ABSL_GUARDED_BY(mu_);
  int64_t rounds_ ABSL_GUARDED_BY(mu_) = 0;
};

// The optimizer a job names:
//   "none", "fedavg"                   PlainServerOptimizer with lr 1 (options are ignored:
//                                      options.server_lr is η for the adaptive rules, and its
//                                      default would be a poor FedAvg step)
//   "fedadagrad", "fedadam", "fedyogi" AdaptiveServerOptimizer with `options`
// INVALID_ARGUMENT for any other name (the message lists the known ones), for bad options, or
// for a negative num_elements.
absl::StatusOr<std::unique_ptr<ServerOptimizer>> MakeServerOptimizer(
    const std::string& name, int64_t num_elements, const AdaptiveOptions& options = {});

}  // namespace fedge::cloud::aggregation

#endif  // FEDGE_CLOUD_AGGREGATION_SERVER_OPTIMIZER_H_
