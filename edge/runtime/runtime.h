#ifndef FEDGE_EDGE_RUNTIME_RUNTIME_H_
#define FEDGE_EDGE_RUNTIME_RUNTIME_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/data/dataset.h"
#include "common/sync/mutex.h"
#include "common/tensor/flat.h"
#include "common/torch/model.h"
#include "edge/runtime/train_limits.h"
#include "fedge/v1/fleet.pb.h"
#include "fedge/v1/model.pb.h"

namespace fedge::edge::runtime {

// One loaded, warmed-up version. Immutable once published: Predict holds a shared_ptr to it,
// so a swap never pulls a model out from under a request.
struct LoadedModel {
  v1::VersionRef ref;
  v1::ModelContract contract;
  std::unique_ptr<torchlib::Model> model;
};

// What fine-tuning produced: the change from the base (local − base) and local metrics.
struct LocalUpdate {
  FlatTensor delta;
  std::string schema_hash;
  int64_t num_samples = 0;
  std::map<std::string, double> metrics;  // train_loss, local_accuracy, train_seconds
};

// Holds the edge's active versions, one per model name, and the previous one for instant
// rollback. Activate loads, warms up, then swaps atomically; the active set is persisted under
// state_dir so the edge serves it at start-up without the cloud. Thread-safe.
class Runtime {
 public:
  struct Options {
    std::string state_dir;  // holds active.pb and the artifact cache (cache/<sha256>)
    // Called with each newly loaded, warmed-up version just before it is swapped in (the drift
    // watch builds its reference then, so no served row goes unwatched).
    std::function<void(const LoadedModel&)> on_loaded;
  };
  static absl::StatusOr<std::unique_ptr<Runtime>> Open(Options options);

  // Loads the archive, checks its digest against ref.sha256, its schema against
  // expected_schema_hash (when given) and its contract, warms it up and makes it the active
  // version of ref.model. INVALID_ARGUMENT for a bad archive; FAILED_PRECONDITION for another
  // schema.
  absl::Status Activate(const v1::VersionRef& ref, absl::string_view archive,
                        const std::string& expected_schema_hash = "");
  // If ref is the model's previous version (still loaded), swaps it back in at once and returns
  // true; returns false when it is not loaded.
  absl::StatusOr<bool> ActivatePrevious(const v1::VersionRef& ref);
  // Swaps back to the previous version of the model. FAILED_PRECONDITION if there is none.
  absl::Status Rollback(const std::string& model);

  // The active version of `model` ("" = the only or first model). NOT_FOUND if none.
  absl::StatusOr<std::shared_ptr<const LoadedModel>> Active(const std::string& model) const;
  std::map<std::string, v1::VersionRef> ActiveVersions() const;

  // Fine-tunes a copy of `base_archive` on data, as the task says. The base's schema hash must
  // equal the task's. Never touches the serving models. Runs on a training thread (kept for
  // later calls at the same priority), under `limits` (threads, CPU share, priority), and
  // waits for it.
  static absl::StatusOr<LocalUpdate> Train(const v1::TrainTask& task,
                                           absl::string_view base_archive,
                                           const data::Dataset& train, const data::Dataset& holdout,
                                           const TrainLimits& limits = TrainLimits());

  // The artifact cache, keyed by digest.
  std::string CachePath(const std::string& sha256) const;
  absl::StatusOr<std::string> ReadCached(const std::string& sha256) const;
  absl::Status WriteCached(const std::string& sha256, absl::string_view bytes) const;

 private:
  explicit Runtime(Options options) : options_(std::move(options)) {}
  absl::Status Persist() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static absl::StatusOr<LocalUpdate> TrainHere(const v1::TrainTask& task,
                                               absl::string_view base_archive,
                                               const data::Dataset& train,
                                               const data::Dataset& holdout,
                                               const TrainLimits& limits);
  absl::StatusOr<std::shared_ptr<const LoadedModel>> Load(
      const v1::VersionRef& ref, absl::string_view archive,
      const std::string& expected_schema_hash) const;

  const Options options_;
  mutable Mutex mu_;
  std::map<std::string, std::shared_ptr<const LoadedModel>> active_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<const LoadedModel>> previous_ ABSL_GUARDED_BY(mu_);
};

// Parses the contract stored in an archive's extra files.
absl::StatusOr<v1::ModelContract> ReadContract(const torchlib::Model& model);

}  // namespace fedge::edge::runtime

#endif  // FEDGE_EDGE_RUNTIME_RUNTIME_H_
