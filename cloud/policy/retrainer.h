#ifndef FEDGE_CLOUD_POLICY_RETRAINER_H_
#define FEDGE_CLOUD_POLICY_RETRAINER_H_

#include <map>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cloud/deploy/controller.h"
#include "cloud/fleet/fleet.h"
#include "cloud/inbox/inbox.h"
#include "cloud/jobs/job_manager.h"
#include "cloud/registry/registry.h"
#include "common/sync/mutex.h"
#include "common/time/clock.h"
#include "fedge/v1/admin.pb.h"
#include "fedge/v1/fleet.pb.h"

namespace fedge::cloud::events {
class EventLog;
}

namespace fedge::cloud::policy {

// The retraining policies. Per model: a drift quorum (k nodes, or a share of the nodes serving
// the model, report drift within a window), a schedule, data arrival (the fleet's sample
// stores took N new labelled samples since the model's latest version) and the manual trigger
// each start one training job from the policy's template, recorded with its cause. A drift
// report counts only if it concerns the version its node runs now and was made after the last
// retraining started (reports that waited in an outbox may be about a replaced version). Debounce:
// never while a job of the model runs; cooldown: not again within cooldown_ms of the last triggered
// job. With auto_deploy, a result that passes the validation gate rolls out with the policy's
// strategy and is promoted to production when the rollout succeeds. RunOnce() is one step; Start()
// runs it on a thread. Thread-safe.
class Retrainer {
 public:
  struct Options {
    registry::Registry* registry = nullptr;
    fleet::Fleet* fleet = nullptr;
    jobs::JobManager* jobs = nullptr;
    deploy::Controller* deploy = nullptr;
    events::EventLog* events = nullptr;  // optional
    inbox::Inbox* inbox = nullptr;       // optional: the data-arrival trigger needs it
    Clock* clock = Clock::Real();
    absl::Duration tick = absl::Milliseconds(200);
  };
  explicit Retrainer(Options options);
  ~Retrainer();

  void Start();
  void Stop();

  // A drift report from a node's Session. False when it is ignored as stale.
  bool OnDrift(const std::string& node_id, const v1::DriftReport& report);
  // A version was registered and its gate has run (the coordinator calls this).
  void OnRegistered(const v1::Version& version);
  // Starts a job from the model's policy now. NOT_FOUND without a policy; FAILED_PRECONDITION
  // while a job of the model runs.
  absl::StatusOr<v1::Job> Trigger(const std::string& model, const std::string& cause,
                                  const std::string& principal);

  void RunOnce();

 private:
  struct ModelState {
    std::map<std::string, absl::Time> drift_by_node;  // latest report per node
    absl::Time last_trigger;
    absl::Time schedule_anchor;
    std::string pending_rollout;   // deployment to promote when it succeeds
  };
  absl::StatusOr<v1::Job> StartLocked(const std::string& model, const v1::RetrainPolicy& policy,
                                      const std::string& cause, const std::string& principal)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The id of an unfinished job of the model, or "" when none runs.
  std::string UnfinishedJobOf(const std::string& model) const;
  void Emit(const std::string& type, const std::string& model, int64_t version,
            const std::string& job_id, const std::string& message);

  const Options options_;
  Mutex mu_;
  CondVar cv_;
  std::map<std::string, ModelState> models_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace fedge::cloud::policy

#endif  // FEDGE_CLOUD_POLICY_RETRAINER_H_
