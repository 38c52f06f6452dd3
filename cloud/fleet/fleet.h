#ifndef FEDGE_CLOUD_FLEET_FLEET_H_
#define FEDGE_CLOUD_FLEET_FLEET_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/sync/mutex.h"
#include "common/time/clock.h"
#include "fedge/v1/admin.pb.h"
#include "fedge/v1/fleet.pb.h"

namespace fedge::cloud::fleet {

// Where the fleet sends a node's control messages: the node's open Session stream.
// Implementations queue and return at once; they never block.
class SessionSink {
 public:
  virtual ~SessionSink() = default;
  // False if the stream is already closed.
  virtual bool Send(const v1::CloudMessage& message) = 0;
  // Ends the stream with this status (UNAVAILABLE at shutdown, so the edge reconnects).
  virtual void Close(const absl::Status& status) = 0;
};

// Which nodes a job or a deployment may use.
struct NodeFilter {
  std::map<std::string, std::string> labels;  // every entry must match the node's labels
  std::string capability;                     // e.g. "train"; empty: any
  int32_t min_cpu_cores = 0;                  // as the node reports them in Hello
  int64_t min_memory_mb = 0;
  bool Matches(const v1::Node& node) const;
};

// The coordinator's view of the fleet: which nodes are connected, their labels and
// capabilities, their liveness from heartbeats, and their desired and active versions.
// Thread-safe.
class Fleet {
 public:
  struct Options {
    Clock* clock = Clock::Real();
    // A connected node whose last heartbeat is older than this is not alive.
    absl::Duration liveness_timeout = absl::Seconds(15);
    absl::Duration heartbeat_interval = absl::Seconds(5);
    // Called (without locks held) when a node's session opens or closes.
    std::function<void(const std::string& node_id, bool online)> on_presence;
  };

  explicit Fleet(Options options);

  // A node's session said hello. A previous session of the same node is closed (the newest
  // connection wins). Returns the session id to pass to Disconnect.
  uint64_t Connect(const v1::Hello& hello, const std::string& peer,
                   std::shared_ptr<SessionSink> sink);
  // The session ended. Ignored if a newer session of the node has replaced it.
  void Disconnect(const std::string& node_id, uint64_t session_id);
  void Heartbeat(const std::string& node_id, const v1::Heartbeat& heartbeat);
  void ReportDeploy(const std::string& node_id, const v1::DeployStatus& status);
  void SetDesired(const std::string& node_id, const v1::VersionRef& version);
  void ClearDesired(const std::string& node_id, const std::string& model);

  // False if the node has no open session.
  bool Send(const std::string& node_id, const v1::CloudMessage& message);

  // Connected, alive nodes whose labels contain every selector entry and that have the
  // capability (if not empty). Sorted by node id.
  std::vector<std::string> Eligible(const std::map<std::string, std::string>& selector,
                                    const std::string& capability) const;
  // Connected, alive nodes that match the filter. Sorted by node id.
  std::vector<std::string> Eligible(const NodeFilter& filter) const;
  bool IsConnected(const std::string& node_id) const;
  // The labelled rows the node last said it holds (Hello.local_samples, or a later
  // "local_samples" metric); 0 when unknown.
  int64_t LocalSamples(const std::string& node_id) const;
  // The node's metrics report: refreshes what LocalSamples returns.
  void ReportMetrics(const std::string& node_id, const v1::MetricsReport& report);
  std::vector<v1::Node> List() const;
  int ConnectedCount() const;

  // Closes the node's open session, if it has one, with `status`.
  void Close(const std::string& node_id, const absl::Status& status);
  // Closes every session (shutdown).
  void CloseAll(const absl::Status& status);

  absl::Duration heartbeat_interval() const { return options_.heartbeat_interval; }

 private:
  struct NodeState {
    v1::Node info;
    uint64_t session_id = 0;  // 0: no open session
    std::shared_ptr<SessionSink> sink;
    absl::Time last_seen;
  };
  bool AliveLocked(const NodeState& node) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int ConnectedCountLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets fedge_cloud_connected_nodes and fedge_cloud_nodes, by site.
  void PublishCountsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, NodeState> nodes_ ABSL_GUARDED_BY(mu_);
  // The site label values published so far (bounded by kMaxSites, then "other").
  std::set<std::string> sites_ ABSL_GUARDED_BY(mu_);
  uint64_t next_session_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace fedge::cloud::fleet

#endif  // FEDGE_CLOUD_FLEET_FLEET_H_
