#ifndef FEDGE_EDGE_SAMPLES_SAMPLE_STORE_H_
#define FEDGE_EDGE_SAMPLES_SAMPLE_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/data/dataset.h"
#include "common/sqlite/sqlite.h"
#include "common/sync/mutex.h"
#include "common/time/clock.h"

namespace fedge::edge::samples {

// Where a labelled sample came from.
enum class Source {
  kIngest,    // a device sent it with its label (Inference.Ingest)
  kFeedback,  // the input of an earlier prediction, labelled later (Inference.Feedback)
};
// "ingest" or "feedback": the stored value and the metrics label.
absl::string_view SourceName(Source source);

struct Sample {
  std::vector<float> features;  // raw, in the store's feature order
  int64_t label = 0;            // class index
  Source source = Source::kIngest;
};

// The edge's labelled samples from the field, kept in SQLite (samples.db under the state dir)
// so that they survive restarts and feed local fine-tuning and the drift reference.
//
// Bounded by count and by age: each Add evicts the oldest samples beyond max_samples and those
// older than max_age, and counts them as dropped. TotalAdded() and Dropped() are persisted with
// the rows they describe, in the same transaction, so they never run backwards across
// restarts.
//
// The feature count is fixed when the file is created; a later Open with another count is
// refused, so samples of another schema never mix in. Thread-safe: every call holds the
// store's mutex.
class SampleStore {
 public:
  struct Options {
    std::string path;  // the SQLite file, e.g. <state_dir>/samples.db
    // The schema of every sample; its size is the store's feature count. Recent() and All()
    // return datasets with these names.
    std::vector<std::string> feature_names;
    // Labels must lie in [0, num_classes); 0: any label >= 0.
    int64_t num_classes = 0;
    int64_t max_samples = 20000;
    absl::Duration max_age = absl::Hours(24 * 7);  // zero: samples never expire
    Clock* clock = Clock::Real();
  };

  // Opens (creating) the store. INVALID_ARGUMENT for bad options or when the file holds
  // samples of another feature count (the message names both counts).
  static absl::StatusOr<std::unique_ptr<SampleStore>> Open(Options options);

  // Stores samples in one transaction, all or none, then evicts beyond the bounds.
  // INVALID_ARGUMENT (naming the sample's index) for a wrong feature count, a label out of
  // range or a non-finite value; nothing is stored then.
  absl::Status Add(const std::vector<Sample>& samples);

  // Samples held now.
  int64_t Count() const;
  // Samples ever accepted by this store, including those evicted since. Never decreases.
  int64_t TotalAdded() const;
  // Samples evicted for the count or age bound.
  int64_t Dropped() const;
  int64_t num_features() const { return static_cast<int64_t>(options_.feature_names.size()); }

  // The newest n samples, oldest first (fewer if the store holds fewer). Expired samples are
  // evicted first.
  absl::StatusOr<data::Dataset> Recent(int64_t n);
  // Every sample held, oldest first.
  absl::StatusOr<data::Dataset> All();

 private:
  SampleStore(Options options, sqlite::Db db);
  absl::Status Validate(const std::vector<Sample>& samples) const;
  // Deletes expired samples and those beyond max_samples; returns how many went.
  absl::StatusOr<int64_t> EvictLocked(int64_t count) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts what lies beyond the bounds now, in a transaction of its own.
  absl::Status TrimLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<data::Dataset> ReadLocked(int64_t limit) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable Mutex mu_;
  sqlite::Db db_ ABSL_GUARDED_BY(mu_);
  int64_t count_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t total_added_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fedge::edge::samples

#endif  // FEDGE_EDGE_SAMPLES_SAMPLE_STORE_H_
