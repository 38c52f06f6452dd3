#ifndef FEDGE_CLOUD_DEPLOY_CONTROLLER_H_
#define FEDGE_CLOUD_DEPLOY_CONTROLLER_H_

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cloud/fleet/fleet.h"
#include "cloud/registry/registry.h"
#include "common/sync/mutex.h"
#include "common/time/clock.h"
#include "fedge/v1/admin.pb.h"
#include "fedge/v1/fleet.pb.h"

namespace fedge::cloud::events {
class EventLog;
}

namespace fedge::cloud::deploy {

// The rollout controller. A deployment is a version, a label selector and a strategy: all at
// once, or canary waves (cumulative fractions of the target nodes) with a soak time and a
// health gate. Each wave's nodes get a DeployCommand; once every connected node of the wave
// runs the version, the wave soaks; the health the nodes report for the new version (error
// rate, p99 latency, accuracy on Feedback labels) is checked throughout. A healthy soak
// promotes to the next wave; a breach, a failed deploy on a node, or a wave that does not
// converge in time rolls every node of the deployment back to the version it ran before, and
// records why (audit log, events). Nodes that are offline get the version as their desired
// state and converge when they return.
//
// State is persisted in the registry on every transition, so a restarted coordinator resumes
// its deployments. RunOnce() advances every deployment one step; Start() runs it on a thread.
// Thread-safe.
class Controller {
 public:
  struct Options {
    registry::Registry* registry = nullptr;
    fleet::Fleet* fleet = nullptr;
    events::EventLog* events = nullptr;  // optional
    Clock* clock = Clock::Real();
    absl::Duration tick = absl::Milliseconds(100);
    absl::Duration default_wave_timeout = absl::Minutes(10);
  };

  explicit Controller(Options options);
  ~Controller();

  // Loads running and paused deployments from the registry and starts the loop.
  absl::Status Start();
  void Stop();

  // NOT_FOUND for an unknown version; FAILED_PRECONDITION for an archived version, no matching
  // node, another active deployment of the model, or a schema change without
  // allow_schema_change; INVALID_ARGUMENT for a bad strategy.
  absl::StatusOr<v1::Deployment> Create(const v1::CreateDeploymentRequest& request,
                                        const std::string& principal);
  absl::StatusOr<v1::Deployment> Get(const std::string& id) const;
  absl::StatusOr<std::vector<v1::Deployment>> List() const;
  absl::StatusOr<v1::Deployment> Pause(const std::string& id, const std::string& principal,
                                       const std::string& reason);
  absl::StatusOr<v1::Deployment> Resume(const std::string& id, const std::string& principal,
                                        const std::string& reason);
  absl::StatusOr<v1::Deployment> Rollback(const std::string& id, const std::string& principal,
                                          const std::string& reason);

  // Reports from the Session streams.
  void OnHealth(const std::string& node_id, const v1::HealthReport& report);
  void OnDeployStatus(const std::string& node_id, const v1::DeployStatus& status);

  // One step of every running deployment.
  void RunOnce();

 private:
  struct NodeKey {
    std::string node;
    std::string model;
    bool operator<(const NodeKey& o) const {
      return std::tie(node, model) < std::tie(o.node, o.model);
    }
  };
  void StepLocked(v1::Deployment* d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RollbackLocked(v1::Deployment* d, const std::string& principal, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendLocked(v1::Deployment* d, v1::NodeRollout* node, const v1::VersionRef& version,
                  const std::string& schema_hash) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistLocked(const v1::Deployment& d, const std::string& action,
                     const std::string& principal, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Emit(const std::string& type, const v1::Deployment& d, const std::string& message);
  // Empty if healthy, else why not.
  std::string JudgeLocked(const v1::Deployment& d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable Mutex mu_;
  CondVar cv_;
  std::map<std::string, v1::Deployment> deployments_ ABSL_GUARDED_BY(mu_);  // active ones
  std::map<NodeKey, v1::HealthReport> health_ ABSL_GUARDED_BY(mu_);
  std::map<NodeKey, v1::DeployStatus> deploy_status_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> schema_of_ ABSL_GUARDED_BY(mu_);  // deployment id -> hash
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace fedge::cloud::deploy

#endif  // FEDGE_CLOUD_DEPLOY_CONTROLLER_H_
