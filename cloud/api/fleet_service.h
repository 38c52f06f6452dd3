#ifndef FEDGE_CLOUD_API_FLEET_SERVICE_H_
#define FEDGE_CLOUD_API_FLEET_SERVICE_H_

#include <atomic>
#include <deque>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "cloud/api/call_limits.h"
#include "cloud/deploy/controller.h"
#include "cloud/enroll/enrollment.h"
#include "cloud/evaluation/federated.h"
#include "cloud/events/event_log.h"
#include "cloud/fleet/fleet.h"
#include "cloud/inbox/inbox.h"
#include "cloud/jobs/job_manager.h"
#include "cloud/policy/retrainer.h"
#include "cloud/registry/registry.h"
#include "common/limits/message_bounds.h"
#include "common/sync/mutex.h"
#include "fedge/v1/fleet.grpc.pb.h"

namespace fedge::cloud::api {

// Bounds and pace of Session messages (see FleetService::Options::session).
struct SessionLimits {
  limits::MessageBounds bounds = {64 * 1024, 1024, 0, 1024, 16};
  // An honest edge sends a few messages a second, and replays its outbox after an outage: a
  // burst absorbs a long backlog, and the rate drains the rest within seconds.
  double messages_per_second = 100;  // per kind (heartbeat, drift, health, ...)
  double message_burst = 1000;
  double bytes_per_second = 256 * 1024;  // over all kinds
  double byte_burst = 4 * 1024 * 1024;
};

// The edge-facing gRPC adapter. Every method uses the callback API, so no set of open streams,
// idle or slow, holds a thread: Session reactions only queue messages and hand them to the
// core, and the transfers (DownloadModel, UploadUpdate) each hold one of a bounded number of
// per-node slots (StreamSlots) instead of a pool thread. The transfers read and write one
// chunk at a time from their reactions; an upload's validation and fold run in the reaction
// that sees its last chunk.
class FleetService final : public v1::Fleet::CallbackService {
 public:
  struct Options {
    fleet::Fleet* fleet = nullptr;
    jobs::JobManager* jobs = nullptr;
    registry::Registry* registry = nullptr;
    deploy::Controller* deploy = nullptr;  // optional: receives health and deploy reports
    evaluation::FederatedEvaluator* evaluator = nullptr;  // optional: evaluation results
    events::EventLog* events = nullptr;                   // optional: drift reports become events
    policy::Retrainer* retrainer = nullptr;  // optional: drift reports count to quorums
    // Deduplicates outbox messages and keeps the report log. Required when edges send outbox
    // messages (message_id > 0); without it such a session is refused.
    inbox::Inbox* inbox = nullptr;
    // Where parts of interrupted uploads wait for their rest (created if missing). Empty: an
    // upload that breaks off is dropped and must start again.
    std::string upload_dir;
    // Per-node limits on DownloadModel, UploadUpdate and UploadOffset calls.
    NodeRateLimiter::Options rate_limit;
    // An upload stream that sends nothing for this long is cancelled.
    absl::Duration upload_idle_timeout = absl::Seconds(60);
    // Concurrent transfers (DownloadModel and UploadUpdate streams) per node and in all.
    StreamSlots::Options streams;
    // Parts of interrupted uploads kept: per node (a new one drops the node's oldest), and in
    // all, by count and bytes (past them a new upload is refused RESOURCE_EXHAUSTED).
    int parts_per_node = 4;
    int max_parts = 10000;
    int64_t max_part_bytes = int64_t{16} << 30;
    // Session messages: every field is bounded (an outbox message out of bounds is dropped
    // and acknowledged, any other ends the session INVALID_ARGUMENT), and each kind is paced
    // per session: past the rate the cloud reads the stream more slowly, which flow control
    // passes back to the edge.
    SessionLimits session;
    // Enrollment and node access. Null: Enroll and RenewCertificate are refused, and every
    // node that names itself may call (a plaintext coordinator for local demos).
    enroll::Enrollment* enrollment = nullptr;
  };
  explicit FleetService(Options options);

  grpc::ServerBidiReactor<v1::EdgeMessage, v1::CloudMessage>* Session(
      grpc::CallbackServerContext* context) override;
  grpc::ServerWriteReactor<v1::Chunk>* DownloadModel(grpc::CallbackServerContext* context,
                                                     const v1::DownloadRequest* request) override;
  grpc::ServerReadReactor<v1::UploadRequest>* UploadUpdate(grpc::CallbackServerContext* context,
                                                           v1::UploadResponse* response) override;
  grpc::ServerUnaryReactor* UploadOffset(grpc::CallbackServerContext* context,
                                         const v1::UploadOffsetRequest* request,
                                         v1::UploadOffsetResponse* response) override;
  grpc::ServerUnaryReactor* Enroll(grpc::CallbackServerContext* context,
                                   const v1::EnrollRequest* request,
                                   v1::EnrollResponse* response) override;
  grpc::ServerUnaryReactor* RenewCertificate(grpc::CallbackServerContext* context,
                                             const v1::RenewCertificateRequest* request,
                                             v1::EnrollResponse* response) override;

  // The part file of (node, task, payload digest) in upload_dir. Its name starts with a hash
  // of the node id, so that a node's parts can be counted.
  std::string PartPath(const std::string& node_id, const std::string& task_id,
                       const std::string& sha256) const;

 private:
  class DownloadReactor;
  class UploadReactor;

  // The unary methods' work; the callback wrappers finish with what these return.
  grpc::Status DoUploadOffset(grpc::CallbackServerContext* context,
                              const v1::UploadOffsetRequest* request,
                              v1::UploadOffsetResponse* response);
  grpc::Status DoEnroll(grpc::CallbackServerContext* context, const v1::EnrollRequest* request,
                        v1::EnrollResponse* response);
  grpc::Status DoRenewCertificate(grpc::CallbackServerContext* context,
                                  const v1::RenewCertificateRequest* request,
                                  v1::EnrollResponse* response);
  // Makes room for a new part file of `bytes` for the node: drops the node's oldest parts past
  // parts_per_node, and refuses (RESOURCE_EXHAUSTED) when all parts together would pass
  // max_parts or max_part_bytes. OK at once when `path` exists already (a resume).
  absl::Status ReservePart(const std::string& node_id, const std::string& path, int64_t bytes);
  // Which artifacts each node was sent a reference to (a task's base, a deploy, an
  // evaluation): the ones DownloadModel lets it fetch. The newest kPerNode per node.
  class Grants {
   public:
    void Add(const std::string& node_id, const std::string& sha256);
    bool Has(const std::string& node_id, const std::string& sha256) const;

   private:
    static constexpr size_t kPerNode = 32;
    mutable Mutex mu_;
    absl::flat_hash_map<std::string, std::deque<std::string>> by_node_ ABSL_GUARDED_BY(mu_);
  };

  // Drops parts older than a day, at most once an hour.
  void SweepParts();
  // The calling node (identity.h), if it may call: not disabled or revoked.
  absl::StatusOr<std::string> Authenticate(const grpc::ServerContextBase& context) const;
  // OK if the node may download the artifact: it was sent a reference to it, or it is a
  // version the node should run. PERMISSION_DENIED otherwise.
  absl::Status MayDownload(const std::string& node_id, const std::string& sha256) const;

  const Options options_;
  Grants grants_;
  NodeRateLimiter limiter_;
  LogLimiter logs_;
  IdleStreams idle_;
  StreamSlots slots_;
  Mutex parts_mu_;  // one part reservation at a time
  std::atomic<int64_t> last_sweep_unix_s_{0};
};

}  // namespace fedge::cloud::api

#endif  // FEDGE_CLOUD_API_FLEET_SERVICE_H_
