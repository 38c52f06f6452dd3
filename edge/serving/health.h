#ifndef FEDGE_EDGE_SERVING_HEALTH_H_
#define FEDGE_EDGE_SERVING_HEALTH_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/sync/mutex.h"
#include "common/time/clock.h"
#include "fedge/v1/fleet.pb.h"
#include "fedge/v1/model.pb.h"

namespace fedge::edge::serving {

// What the edge saw while serving each version: predictions, failures, latency and accuracy on
// labels that arrive later through Feedback. The rollout controller's health gates read these
// figures from the reports. Counts are per version digest, from the moment the version first
// served. Thread-safe.
class HealthTracker {
 public:
  struct Options {
    Clock* clock = Clock::Real();
    size_t max_remembered_predictions = 100000;  // for Feedback; the oldest are forgotten
    size_t latency_samples = 4096;                // per version, for p99
  };
  explicit HealthTracker(Options options);

  // Records one answered Predict row (failed = the model itself failed) with its latency, and
  // remembers a prediction id for Feedback.
  void RecordPrediction(const v1::VersionRef& version, const std::string& prediction_id,
                        int32_t predicted_label, absl::Duration latency);
  // The rows of one request at once (one lock for the batch): prediction_ids[i] predicted
  // predicted_labels[i]; both spans have the same size.
  void RecordPredictions(const v1::VersionRef& version,
                         absl::Span<const std::string> prediction_ids,
                         absl::Span<const int32_t> predicted_labels, absl::Duration latency);
  void RecordFailure(const v1::VersionRef& version, absl::Duration latency);

  struct FeedbackResult {
    bool correct = false;
    v1::VersionRef version;
  };
  // NOT_FOUND for an unknown or forgotten prediction id; ALREADY_EXISTS for a second label.
  absl::StatusOr<FeedbackResult> RecordFeedback(const std::string& prediction_id, int32_t label);

  // Forgets a version's counts: it starts over each time it is activated.
  void Reset(const std::string& sha256);
  // The model name of a remembered prediction ("" if unknown).
  std::string ModelOf(const std::string& prediction_id) const;

  // The report of each version in `active` (model name -> version).
  std::vector<v1::HealthReport> Reports(const std::map<std::string, v1::VersionRef>& active) const;

 private:
  struct VersionStats {
    v1::VersionRef ref;
    // The digest, shared by every remembered prediction of the version (no copy per row).
    std::shared_ptr<const std::string> sha256;
    absl::Time first_seen;
    int64_t predictions = 0;
    int64_t errors = 0;
    int64_t feedback = 0;
    int64_t feedback_correct = 0;
    std::vector<double> latencies_ms;  // ring buffer
    size_t next = 0;
  };
  struct Remembered {
    std::shared_ptr<const std::string> sha256;
    int32_t label = 0;
    bool labelled = false;
  };
  VersionStats& StatsLocked(const v1::VersionRef& version) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddLatencyLocked(VersionStats& stats, absl::Duration latency)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable Mutex mu_;
  std::unordered_map<std::string, VersionStats> stats_ ABSL_GUARDED_BY(mu_);  // by sha256
  std::unordered_map<std::string, Remembered> predictions_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);  // prediction ids, oldest first
};

}  // namespace fedge::edge::serving

#endif  // FEDGE_EDGE_SERVING_HEALTH_H_
