#ifndef FEDGE_CLOUD_JOBS_JOB_MANAGER_H_
#define FEDGE_CLOUD_JOBS_JOB_MANAGER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cloud/fleet/fleet.h"
#include "cloud/models/sandbox.h"
#include "cloud/registry/registry.h"
#include "common/sync/mutex.h"
#include "common/tensor/flat.h"
#include "common/time/clock.h"
#include "fedge/v1/admin.pb.h"
#include "fedge/v1/fleet.pb.h"

namespace fedge::cloud::events {
class EventLog;
}

namespace fedge::cloud::jobs {

// Runs federated training jobs. Each job is a state machine on its own thread: for each round
// it waits for enough eligible nodes, selects K of them, sends TrainTasks, folds the updates
// that arrive (validated whole first) and, at the deadline or when all are in, aggregates if
// the minimum arrived, else retries or fails the round with a reason. Every completed round is
// persisted with its global model, so a restarted coordinator resumes a job from its last
// completed round (ResumeUnfinished). The job's result is registered as a new version.
//
// Thread-safe. The Fleet service calls SubmitUpdate and OnTaskStatus from gRPC threads.
class JobManager {
 public:
  struct Options {
    registry::Registry* registry = nullptr;
    fleet::Fleet* fleet = nullptr;
    Clock* clock = Clock::Real();
    // Upper bound on an update's L2 norm (a diverged or malicious update is refused).
    double max_update_norm = 1e6;
    // Upper bound on an update's num_samples: more is refused. Below it, an update weighs at
    // most the local samples its node reported (Fleet::LocalSamples) when its task was given,
    // so that no node can make the round's mean its own by claiming a huge count.
    int64_t max_update_samples = 100'000'000;
    // How user models (their contract's architecture "user") are scored on the holdout each
    // round: in fedge-model-check, never in this process.
    models::SandboxLimits model_check;
    events::EventLog* events = nullptr;  // optional
    // Called after a job registers its result (the coordinator runs the validation gate).
    std::function<void(const v1::Version&)> on_registered;
  };

  explicit JobManager(Options options);
  ~JobManager();

  // Validates the spec (fills defaults), persists the job and starts it.
  // NOT_FOUND for an unknown model or base version; INVALID_ARGUMENT for a bad field.
  absl::StatusOr<v1::Job> Start(v1::JobSpec spec, const std::string& creator);
  absl::StatusOr<v1::Job> Get(const std::string& id) const;
  // Stops a running job after its current step; it ends JOB_CANCELLED with the reason.
  // FAILED_PRECONDITION if the job is not running.
  absl::StatusOr<v1::Job> Cancel(const std::string& id, const std::string& principal,
                                 const std::string& reason);
  absl::StatusOr<std::vector<v1::Job>> List() const;
  // Restarts the jobs a previous process left running.
  absl::Status ResumeUnfinished();

  // Checks an upload's header before its payload is staged: the job, round and task exist and
  // belong to this node, the schema and encoding match. NOT_FOUND (unknown job),
  // FAILED_PRECONDITION (stale or closed round), PERMISSION_DENIED (task not this node's),
  // ALREADY_EXISTS (already received), INVALID_ARGUMENT (schema, encoding, sizes).
  absl::Status CheckUpload(const std::string& node_id, const v1::UpdateHeader& header) const;
  // Validates the whole payload (size, NaN/Inf, norm) and folds it into the round.
  absl::Status SubmitUpdate(const std::string& node_id, const v1::UpdateHeader& header,
                            absl::string_view payload);
  void OnTaskStatus(const std::string& node_id, const v1::TaskStatus& status);

  // Stops every job thread. Running jobs stay JOB_RUNNING in the registry to be resumed.
  void Shutdown();

 private:
  struct Running;
  struct Context;
  enum class Outcome { kFinished, kStopped, kFailed };
  // A synchronous round asks `asked` nodes and closes at `target` updates (over-selection).
  struct RoundSize {
    int target = 0;
    int asked = 0;
  };
  static RoundSize SizeRound(const v1::JobSpec& spec, int eligible);

  void Launch(std::shared_ptr<Running> job);
  void Run(std::shared_ptr<Running> job);
  Outcome RunRounds(Context& ctx);  // synchronous rounds
  Outcome RunAsync(Context& ctx);   // FedBuff
  // Installs the round's next model: archive, optimizer state, holdout score, persisted.
  absl::Status CompleteRound(Context& ctx, v1::RoundInfo* info, const FlatTensor& next,
                             absl::Time started);
  v1::CloudMessage NewTask(const Context& ctx, int round, const std::string& task_id,
                           absl::Time deadline) const;
  bool Stopping(Running& rj) const;
  std::shared_ptr<Running> Find(const std::string& id) const;
  void Emit(const std::string& type, const v1::Job& job, int round, const std::string& message,
            int64_t version = 0) const;

  const Options options_;
  mutable Mutex mu_;
  std::map<std::string, std::shared_ptr<Running>> running_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::thread> threads_ ABSL_GUARDED_BY(mu_);  // by job id
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fedge::cloud::jobs

#endif  // FEDGE_CLOUD_JOBS_JOB_MANAGER_H_
