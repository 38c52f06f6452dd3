#ifndef FEDGE_EDGE_SERVING_DRIFT_WATCH_H_
#define FEDGE_EDGE_SERVING_DRIFT_WATCH_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/data/dataset.h"
#include "common/sync/mutex.h"
#include "edge/drift/drift.h"
#include "edge/runtime/runtime.h"
#include "fedge/v1/fleet.pb.h"

namespace fedge::edge::serving {

// Watches the live inputs of each active version for drift. When a version becomes active,
// Prepare builds its reference profile from this edge's own recent data (features as the
// devices send them, and the version's predictions on them); Predict then feeds every scored
// row to the version's monitor. A drift that holds for the sustained windows becomes a
// DriftReport for the cloud. Thread-safe.
class DriftWatch {
 public:
  struct Options {
    // The data a newly active version's inputs are compared with, asked for once per version
    // (the node's newest samples, so that a version trained after a drift is judged against
    // the new conditions). Null or no rows: nothing is watched.
    std::function<data::Dataset()> reference;
    drift::Monitor::Options monitor;
    size_t max_pending_reports = 100;
  };
  explicit DriftWatch(Options options);

  // Builds the version's profile and monitor (once per digest). Runs on the deploy path.
  absl::Status Prepare(const runtime::LoadedModel& loaded);
  // One scored row of a version.
  void Observe(const v1::VersionRef& version, const float* row, int64_t predicted_label);
  // The scored rows of one request at once: rows holds predicted_labels.size() rows of the
  // version's feature count.
  void ObserveAll(const v1::VersionRef& version, const float* rows, int64_t width,
                  absl::Span<const int64_t> predicted_labels);
  // Reports waiting to be sent, oldest first; taking them empties the queue.
  std::vector<v1::DriftReport> TakeReports();

 private:
  struct Watched {
    v1::VersionRef ref;
    std::vector<std::string> feature_names;
    std::unique_ptr<drift::Monitor> monitor;
  };
  // Publishes a completed window: metrics, and a report when drift has held.
  void Publish(const Watched& watched, const drift::WindowResult& result);

  const Options options_;
  Mutex mu_;
  std::map<std::string, std::shared_ptr<Watched>> by_sha_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::DriftReport> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::edge::serving

#endif  // FEDGE_EDGE_SERVING_DRIFT_WATCH_H_
