#ifndef FEDGE_EDGE_DRIFT_DRIFT_H_
#define FEDGE_EDGE_DRIFT_DRIFT_H_

// The edge's input drift monitor. A ReferenceProfile summarises what a model version was
// trained on (per-feature quantile bins and a quantile sketch, plus the distribution of the
// model's predicted classes). A Monitor compares tumbling windows of live inputs against it
// with PSI and the two-sample Kolmogorov–Smirnov statistic, and says when drift is sustained.
// Pure computation: no RPC, no torch, no clock.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sync/mutex.h"

namespace fedge::edge::drift {

// Proportions below this are raised to it before PSI takes their logarithm, so an empty bin
// on either side gives a large but finite term instead of infinity. Proportions are not
// renormalised after flooring; with ≤ 1000 bins the distortion is < 0.1 of probability mass
// in the worst case and nil for bins that are not empty.
inline constexpr double kPsiEpsilon = 1e-4;

// Number of order statistics kept per feature to represent the reference distribution for KS
// (fewer when the training data has fewer rows, in which case all rows are kept).
inline constexpr int kKsSketchSize = 200;

// Population stability index: Σ_i (a_i − e_i) · ln(a_i / e_i) over proportions, each floored at
// kPsiEpsilon first. `expected` and `actual` must have the same size; if they do not, the result
// is NaN. 0 for identical distributions; conventionally < 0.1 is stable, ≥ 0.2 is a shift.
double Psi(const std::vector<double>& expected, const std::vector<double>& actual);

// The two-sample Kolmogorov–Smirnov statistic sup_x |F_a(x) − F_b(x)| between the empirical
// CDFs of two samples (any order; ties handled exactly). In [0, 1]; 0 when either is empty.
double KsStatistic(const std::vector<double>& a, const std::vector<double>& b);

// What a model version was trained on, as the drift monitor needs it. Immutable once built;
// safe to share between threads. Ships inside a model archive as a text file (Serialize()).
class ReferenceProfile {
 public:
  struct Feature {
    // Strictly increasing inner bin edges. Bin b holds x with edges[b-1] <= x < edges[b]; bin 0
    // is (-inf, edges[0]) and the last bin is [edges.back(), +inf). So there are
    // edges.size() + 1 bins.
    std::vector<double> edges;
    // Share of the training rows in each bin (edges.size() + 1 entries, summing to 1).
    std::vector<double> proportions;
    // Sorted order statistics of the training values at probabilities (i + 0.5) / K,
    // K = min(kKsSketchSize, rows): the reference side of the KS statistic. Its CDF is within
    // 1/(2K) of the training data's empirical CDF.
    std::vector<float> sketch;
  };

  // `rows` is row-major, rows.size() == n * num_features with n >= 1; every value finite.
  // For each feature, edges are the values at the 1/bins, 2/bins, ... quantiles of the training
  // data (the order statistic at index floor(j * n / bins)), deduplicated, so a feature with
  // many ties gets fewer bins. Proportions are measured by binning the training data itself.
  // `predicted_labels` are the model's predictions on the same rows: either empty (no
  // prediction monitoring; num_classes must then be 0) or n labels in [0, num_classes).
  // 2 <= bins <= 1000. Anything else is INVALID_ARGUMENT.
  static absl::StatusOr<ReferenceProfile> Build(const std::vector<float>& rows,
                                                int num_features,
                                                const std::vector<int64_t>& predicted_labels,
                                                int num_classes, int bins = 10);

  // A compact whitespace-separated text form (header "fedge-drift-profile 1"). Doubles are
  // written with 17 significant digits and the sketch with 9, so Parse(Serialize()) is exact.
  std::string Serialize() const;
  // Refuses anything malformed with INVALID_ARGUMENT: wrong header or version, counts that do
  // not match, non-finite numbers, edges not strictly increasing, proportions that are negative
  // or do not sum to 1 (±1e-6), an unsorted sketch, trailing data.
  static absl::StatusOr<ReferenceProfile> Parse(absl::string_view text);

  int num_features() const { return static_cast<int>(features_.size()); }
  int num_classes() const { return static_cast<int>(prediction_proportions_.size()); }
  int64_t reference_rows() const { return reference_rows_; }
  const Feature& feature(int i) const { return features_[i]; }
  // Share of training rows predicted as each class (empty when num_classes is 0).
  const std::vector<double>& prediction_proportions() const { return prediction_proportions_; }

 private:
  ReferenceProfile() = default;

  std::vector<Feature> features_;
  std::vector<double> prediction_proportions_;
  int64_t reference_rows_ = 0;
};

// The outcome of one full window.
struct WindowResult {
  int64_t window_index = -1;  // 0 for the first window; -1 before any window has completed
  std::vector<double> psi;    // per feature, against the reference bins
  std::vector<double> ks;     // per feature, against the reference sketch
  double prediction_psi = 0;  // predicted-class distribution vs reference (0 if no classes)
  std::vector<int> drifted_features;  // features with psi >= psi_threshold (or ks >= ks_thr.)
  bool drifted = false;  // any drifted feature (or prediction drift, when enabled)
  bool report = false;   // drift has now held for sustained_windows consecutive windows
};

// Watches live inputs in tumbling (non-overlapping) windows of `window` rows.
//
// Reporting rule: a counter of consecutive drifted windows is kept; a window that is not
// drifted resets it to 0. When it reaches sustained_windows the window is marked `report` and
// the counter goes back to 0. So a drift that persists reports once per sustained_windows
// windows (a rate-limited reminder rather than a report every window), and an isolated noisy
// window never reports when sustained_windows >= 2.
//
// Thread-safe: Observe() and Last() may be called from many threads at once. Observe() is
// O(features · log bins) per row; the row that completes a window also pays for the window
// statistics (O(features · window · log window) for the KS sort).
class Monitor {
 public:
  struct Options {
    int window = 500;            // rows per window; values < 1 are treated as 1
    double psi_threshold = 0.2;  // feature drifts when its PSI >= this
    double ks_threshold = 0;     // 0: off; otherwise a feature also drifts when KS >= this
    int sustained_windows = 2;   // values < 1 are treated as 1
    double prediction_psi_threshold = 0;  // 0: off; otherwise prediction PSI >= this drifts
  };

  Monitor(ReferenceProfile profile, Options options);

  const ReferenceProfile& profile() const { return profile_; }

  // `row` points at profile().num_features() values. A NaN value counts in the last bin (and
  // sorts as +inf for KS), so a flood of NaNs shows up as drift. A label outside
  // [0, num_classes) is left out of the prediction distribution. Returns the window's result
  // when this row completes a window, otherwise nullopt.
  std::optional<WindowResult> Observe(const float* row, int64_t predicted_label);

  // The most recent completed window (window_index -1 if none yet).
  WindowResult Last() const;

 private:
  WindowResult CloseWindowLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ReferenceProfile profile_;
  const Options options_;

  mutable Mutex mu_;
  int64_t rows_in_window_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t windows_done_ ABSL_GUARDED_BY(mu_) = 0;
  int streak_ ABSL_GUARDED_BY(mu_) = 0;
  // Per feature, counts per bin, flattened with bin_offset_.
  std::vector<int64_t> bin_counts_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> bin_offset_;  // immutable after construction
  // Feature-major: values_[f * window + i].
  std::vector<float> values_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> class_counts_ ABSL_GUARDED_BY(mu_);
  WindowResult last_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::edge::drift

#endif  // FEDGE_EDGE_DRIFT_DRIFT_H_
