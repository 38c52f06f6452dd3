#ifndef FEDGE_CLOUD_AGGREGATION_ROBUST_H_
#define FEDGE_CLOUD_AGGREGATION_ROBUST_H_

// Round aggregators: the plain sample-weighted mean, and rules that tolerate a minority of
// faulty or malicious clients (coordinate-wise median, trimmed mean, Krum, Multi-Krum), plus
// server-side norm clipping in front of any of them.
//
// Every aggregator here is thread-safe: Fold() may be called from many threads at once, and
// Merge() and Aggregate() may run concurrently with it. Fold() refuses, with
// INVALID_ARGUMENT, an update of the wrong size, with a non-positive sample count or with a
// non-finite value. Merge() refuses, with INVALID_ARGUMENT, an aggregator of another rule,
// other parameters or another size, and the aggregator itself; it copies what `other` holds
// and leaves `other` unchanged. Aggregate() does not consume what was folded.
//
// Memory: WeightedMean is O(model size). The robust rules must look at every update at once,
// so they keep all of them, as float32: O(updates × model size).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cloud/aggregation/rules.h"
#include "common/sync/mutex.h"
#include "common/tensor/flat.h"

namespace fedge::cloud::aggregation {

// The sample-weighted mean of the deltas (the aggregation step of FedAvg), over a running
// float64 sum.
class WeightedMean final : public RoundAggregator {
 public:
  explicit WeightedMean(int64_t num_elements);
  std::string name() const override { return "mean"; }
  int64_t num_elements() const override { return num_elements_; }
  absl::Status Fold(const UpdateView& update) override;
  absl::Status FoldEncoded(absl::string_view payload, const codec::CodecParams& params,
                           int64_t num_samples, double scale = 1.0) override;
  absl::Status Merge(RoundAggregator& other) override;
  int folded() const override;
  absl::StatusOr<std::vector<double>> Aggregate() override;

 private:
  const int64_t num_elements_;
  mutable Mutex mu_;
  std::vector<double> weighted_sum_ ABSL_GUARDED_BY(mu_);
  double total_weight_ ABSL_GUARDED_BY(mu_) = 0;
  int folded_ ABSL_GUARDED_BY(mu_) = 0;
};

// The base of the rules that must look at every update at once: it keeps the folded updates as
// float32 and implements Fold, Merge and folded(); a rule supplies its parameter check and its
// aggregate over the kept updates.
class KeepingAggregator : public RoundAggregator {
 public:
  int64_t num_elements() const final { return num_elements_; }
  absl::Status Fold(const UpdateView& update) final;
  absl::Status Merge(RoundAggregator& other) final;
  int folded() const final;
  // FAILED_PRECONDITION if nothing was folded, else AggregateKept's answer.
  absl::StatusOr<std::vector<double>> Aggregate() final;

 protected:
  explicit KeepingAggregator(int64_t num_elements) : num_elements_(num_elements) {}
  // INVALID_ARGUMENT unless `other`, an aggregator of the same concrete type, has the same
  // parameters.
  virtual absl::Status CheckSameParameters(const KeepingAggregator& other) const {
    return absl::OkStatus();
  }
  // The aggregate of `updates` (at least one, in fold order).
  virtual absl::StatusOr<std::vector<double>> AggregateKept(
      const std::vector<FlatTensor>& updates) const = 0;

  const int64_t num_elements_;

 private:
  mutable Mutex mu_;
  std::vector<FlatTensor> updates_ ABSL_GUARDED_BY(mu_);
};

// The coordinate-wise median of the deltas, unweighted; with an even number of updates, the
// mean of the two middle values. Tolerates fewer than half of the updates being arbitrary.
class CoordinateMedian final : public KeepingAggregator {
 public:
  explicit CoordinateMedian(int64_t num_elements) : KeepingAggregator(num_elements) {}
  std::string name() const override { return "median"; }

 private:
  absl::StatusOr<std::vector<double>> AggregateKept(
      const std::vector<FlatTensor>& updates) const override;
};

// The coordinate-wise trimmed mean (Yin et al. 2018), unweighted: for each coordinate, of n
// values the k = floor(trim_fraction · n) largest and k smallest are dropped and the rest
// averaged. (trim_fraction · n is rounded down after adding 1e-9, so that 0.29 · 100 trims
// 29, not 28.) Aggregate() is FAILED_PRECONDITION if trimming would leave no value.
class TrimmedMean final : public KeepingAggregator {
 public:
  // INVALID_ARGUMENT unless 0 ≤ trim_fraction < 0.5 and num_elements ≥ 0.
  static absl::StatusOr<std::unique_ptr<TrimmedMean>> Create(int64_t num_elements,
                                                             double trim_fraction);

  std::string name() const override { return "trimmed_mean"; }
  double trim_fraction() const { return trim_fraction_; }

 private:
  TrimmedMean(int64_t num_elements, double trim_fraction)
      : KeepingAggregator(num_elements), trim_fraction_(trim_fraction) {}
  absl::Status CheckSameParameters(const KeepingAggregator& other) const override;
  absl::StatusOr<std::vector<double>> AggregateKept(
      const std::vector<FlatTensor>& updates) const override;

  const double trim_fraction_;
};

// Krum and Multi-Krum (Blanchard et al. 2017), for at most `byzantine` = f faulty updates out
// of n. Each update's score is the sum of squared L2 distances to its n − f − 2 nearest other
// updates. Krum (multi = 1) returns the update with the lowest score; Multi-Krum (multi = m >
// 1) returns the unweighted mean of the m lowest-scoring updates. Equal scores are ordered by
// fold order (Merge appends the other aggregator's updates after this one's), so the result
// is deterministic for a given order. Aggregate() takes O(n² · model size) time and is
// FAILED_PRECONDITION unless n ≥ f + 3 and multi ≤ n.
class Krum final : public KeepingAggregator {
 public:
  // INVALID_ARGUMENT unless byzantine ≥ 0, multi ≥ 1 and num_elements ≥ 0.
  static absl::StatusOr<std::unique_ptr<Krum>> Create(int64_t num_elements, int byzantine,
                                                      int multi);

  // "krum" for multi = 1, else "multi_krum".
  std::string name() const override;
  int byzantine() const { return byzantine_; }
  int multi() const { return multi_; }

 private:
  Krum(int64_t num_elements, int byzantine, int multi)
      : KeepingAggregator(num_elements), byzantine_(byzantine), multi_(multi) {}
  absl::Status CheckSameParameters(const KeepingAggregator& other) const override;
  absl::StatusOr<std::vector<double>> AggregateKept(
      const std::vector<FlatTensor>& updates) const override;

  const int byzantine_;
  const int multi_;
};

// Server-side norm clipping: an update whose L2 norm exceeds max_norm is scaled down to norm
// max_norm before it is folded into the inner aggregator; smaller updates pass unchanged.
// Merge() takes another ClippedAggregator with the same max_norm and merges the inner
// aggregators.
class ClippedAggregator final : public RoundAggregator {
 public:
  // INVALID_ARGUMENT if inner is null or max_norm is not a positive finite number.
  static absl::StatusOr<std::unique_ptr<ClippedAggregator>> Create(
      std::unique_ptr<RoundAggregator> inner, double max_norm);

  // "clip(<inner name>)".
  std::string name() const override;
  double max_norm() const { return max_norm_; }
  int64_t num_elements() const override { return inner_->num_elements(); }
  absl::Status Fold(const UpdateView& update) override;
  absl::Status Merge(RoundAggregator& other) override;
  int folded() const override;
  absl::StatusOr<std::vector<double>> Aggregate() override;
  // How many folded updates were scaled down, including those of merged aggregators.
  int clipped() const;

 private:
  ClippedAggregator(std::unique_ptr<RoundAggregator> inner, double max_norm);

  const std::unique_ptr<RoundAggregator> inner_;
  const double max_norm_;
  mutable Mutex mu_;
  int clipped_ ABSL_GUARDED_BY(mu_) = 0;
};

struct RuleParams {
  double trim_fraction = 0.1;  // trimmed_mean
  int byzantine = 0;           // krum, multi_krum: f
  int multi_krum = 0;          // krum, multi_krum: m; 0 means plain Krum
  double clip_norm = 0;        // any rule: clip updates to this L2 norm first; 0 means none
};

// The aggregator for a rule name: "fedavg" or "mean" (WeightedMean), "median", "trimmed_mean",
// "krum" (Multi-Krum if params.multi_krum > 1), "multi_krum" (needs params.multi_krum ≥ 1).
// INVALID_ARGUMENT for an unknown rule, naming the known ones, or for bad parameters.
absl::StatusOr<std::unique_ptr<RoundAggregator>> MakeRoundAggregator(const std::string& rule,
                                                                     int64_t num_elements,
                                                                     const RuleParams& params);

}  // namespace fedge::cloud::aggregation

#endif  // FEDGE_CLOUD_AGGREGATION_ROBUST_H_
