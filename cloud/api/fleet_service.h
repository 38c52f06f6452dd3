#ifndef FEDGE_CLOUD_API_FLEET_SERVICE_H_
#define FEDGE_CLOUD_API_FLEET_SERVICE_H_

#include <atomic>
#include <deque>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "common/sync/mutex.h"

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
#include "fedge/v1/fleet.grpc.pb.h"

namespace fedge::cloud::api {

// The edge-facing gRPC adapter. Session uses the callback API, so thousands of idle streams
// hold no threads; its reactions only queue messages and hand them to the core. The bulk RPCs
// (DownloadModel, UploadUpdate) do disk I/O, so they use the synchronous API, whose bounded
// thread pool also caps concurrent transfers.
class FleetService final : public v1::Fleet::WithCallbackMethod_Session<v1::Fleet::Service> {
 public:
  struct Options {
    fleet::Fleet* fleet = nullptr;
    jobs::JobManager* jobs = nullptr;
    registry::Registry* registry = nullptr;
    deploy::Controller* deploy = nullptr;  // optional: receives health and deploy reports
    evaluation::FederatedEvaluator* evaluator = nullptr;  // optional: evaluation results
    events::EventLog* events = nullptr;                   // optional: drift reports become events
    policy::Retrainer* retrainer = nullptr;               // optional: drift reports count to quorums
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
    // Enrollment and node access. Null: Enroll and RenewCertificate are refused, and every
    // node that names itself may call (a plaintext coordinator for local demos).
    enroll::Enrollment* enrollment = nullptr;
  };
  explicit FleetService(Options options);

  grpc::ServerBidiReactor<v1::EdgeMessage, v1::CloudMessage>* Session(
      grpc::CallbackServerContext* context) override;
  grpc::Status DownloadModel(grpc::ServerContext* context, const v1::DownloadRequest* request,
                             grpc::ServerWriter<v1::Chunk>* writer) override;
  grpc::Status UploadUpdate(grpc::ServerContext* context,
                            grpc::ServerReader<v1::UploadRequest>* reader,
                            v1::UploadResponse* response) override;
  grpc::Status UploadOffset(grpc::ServerContext* context, const v1::UploadOffsetRequest* request,
                            v1::UploadOffsetResponse* response) override;
  grpc::Status Enroll(grpc::ServerContext* context, const v1::EnrollRequest* request,
                      v1::EnrollResponse* response) override;
  grpc::Status RenewCertificate(grpc::ServerContext* context,
                                const v1::RenewCertificateRequest* request,
                                v1::EnrollResponse* response) override;

  // The part file of (node, task, payload digest) in upload_dir.
  std::string PartPath(const std::string& node_id, const std::string& task_id,
                       const std::string& sha256) const;

 private:
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
  IdleStreams idle_;
  std::atomic<int64_t> last_sweep_unix_s_{0};
};

}  // namespace fedge::cloud::api

#endif  // FEDGE_CLOUD_API_FLEET_SERVICE_H_
