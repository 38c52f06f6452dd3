#ifndef FEDGE_EDGE_AGENT_AGENT_H_
#define FEDGE_EDGE_AGENT_AGENT_H_

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/data/dataset.h"
#include "common/net/servers.h"
#include "common/sync/mutex.h"
#include "edge/agent/downloader.h"
#include "common/codec/error_feedback.h"
#include "edge/outbox/outbox.h"
#include "edge/runtime/runtime.h"
#include "fedge/v1/fleet.grpc.pb.h"

namespace fedge::edge::agent {

// The edge's link to the cloud. It dials out (so it works behind NAT), holds one Session
// stream, sends heartbeats, and reconnects with exponential backoff and jitter when the link
// drops. Tasks and deploy commands run one at a time on a worker thread, so a long training
// run never delays a heartbeat. Models are fetched by digest, cached, and resumed from their
// offset after a broken download.
//
// Everything else bound for the cloud (task, deploy and health status, evaluation results,
// drift and metrics reports) is queued in the durable outbox, online or not, and a delivery
// thread streams it in id order whenever a session is open: from the id after the one the
// HelloAck says the cloud applied, with at most a window of unacknowledged messages in flight.
// The cloud's Acks delete what it has applied.
class Agent {
 public:
  struct Options {
    std::string node_id;
    std::string cloud_address;  // host:port of the Fleet API
    // TLS toward the cloud (net::ChannelTls); no ca_file: plaintext, the node named in metadata.
    net::ChannelTls tls;
    // Called before each Session attempt, and once a minute while connected (enrollment and
    // renewal); an error is logged, and a Session attempt then waits out its backoff.
    std::function<absl::Status()> before_session;
    std::map<std::string, std::string> labels;
    std::vector<std::string> capabilities = {"train", "predict"};
    // What the node offers for training, reported in Hello for job selection; 0: the
    // machine's cores and physical memory.
    int cpu_cores = 0;
    int64_t memory_mb = 0;
    runtime::Runtime* runtime = nullptr;
    outbox::Outbox* outbox = nullptr;             // required
    // Residuals of top-k compressed updates, carried into the next update of the same job.
    // Null: top-k updates are sent without error feedback.
    codec::ErrorFeedback* error_feedback = nullptr;
    // The data a training task fine-tunes on, read when the task starts (the node's base data
    // and the labelled samples it has gathered). Null or no rows: the task fails.
    std::function<data::Dataset()> training_data;
    // Hello.local_samples: the rows training_data() would give now. Null: 0.
    std::function<int64_t()> local_samples;
    const data::Dataset* holdout_data = nullptr;  // local holdout for local metrics
    // How much of the machine fine-tuning may take while the node serves.
    runtime::TrainLimits train_limits;
    absl::Duration initial_backoff = absl::Milliseconds(200);
    absl::Duration max_backoff = absl::Seconds(30);
    absl::Duration rpc_timeout = absl::Seconds(120);
    uint64_t seed = 0;
    std::string software_version = "0.1.0";
    // Called as a version is about to become active (its health counts start over).
    std::function<void(const v1::VersionRef&)> on_activated;
    // Drift reports waiting to be sent; polled with every heartbeat.
    std::function<std::vector<v1::DriftReport>()> drift_reports;
    // Health reports of the active versions, polled with every heartbeat; queued when changed.
    std::function<std::vector<v1::HealthReport>()> health_reports;
    // Counters about the node (e.g. samples_total), polled with every heartbeat; queued when
    // changed.
    std::function<std::map<std::string, double>()> metrics;
    // Unacknowledged outbox messages in flight on one session.
    int delivery_window = 256;
    // Called with each update as it is sent (tests check aggregation against it).
    std::function<void(const v1::UpdateHeader&, const FlatTensor& delta)> on_update_sent;
  };

  explicit Agent(Options options);
  ~Agent();

  void Start();
  // Ends the session and joins the threads. Idempotent.
  void Stop();

  bool connected() const { return connected_.load(); }
  int64_t tasks_done() const { return tasks_done_.load(); }

 private:
  using Stream = grpc::ClientReaderWriter<v1::EdgeMessage, v1::CloudMessage>;

  void SessionLoop();
  // Heartbeats while connected; health, drift and metrics reports into the outbox always.
  void ReportLoop();
  void DeliveryLoop();
  void WorkerLoop();
  // Queues a message for the cloud in the outbox.
  void Enqueue(v1::EdgeMessage message);
  void OnApplied(uint64_t applied_id, bool new_session);
  absl::Status RunTask(const v1::TrainTask& task);
  // The update's payload in the task's encoding (top-k through error feedback).
  absl::StatusOr<std::string> EncodeUpdate(const v1::TrainTask& task,
                                           const runtime::LocalUpdate& update) const;
  absl::Status RunDeploy(const v1::VersionRef& version, const std::string& schema_hash);
  // Scores a version on the local holdout (federated evaluation).
  v1::EvaluateResult RunEvaluate(const v1::EvaluateTask& task);
  // The artifact, from the cache or downloaded; *downloaded counts bytes fetched.
  absl::StatusOr<std::string> Fetch(const std::string& sha256, int64_t* downloaded);
  // Retries transient failures with backoff until deadline_unix_ms (0: a few attempts).
  absl::Status Upload(const v1::UpdateHeader& header, const std::string& payload,
                      int64_t deadline_unix_ms);
  // Writes on the session stream if one is open.
  bool SendOnSession(const v1::EdgeMessage& message);
  bool Stopping();

  const Options options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Fleet::Stub> stub_;
  Downloader downloader_;
  std::atomic<bool> connected_{false};
  std::atomic<int64_t> tasks_done_{0};

  Mutex mu_;
  CondVar cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* session_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  Stream* stream_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::Duration heartbeat_interval_ ABSL_GUARDED_BY(mu_) = absl::Seconds(5);
  std::deque<v1::CloudMessage> work_ ABSL_GUARDED_BY(mu_);
  // Delivery state of the current session.
  bool delivering_ ABSL_GUARDED_BY(mu_) = false;  // a HelloAck arrived on the open session
  uint64_t session_gen_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t sent_up_to_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pushes_ ABSL_GUARDED_BY(mu_) = 0;  // outbox pushes so far, to wake the delivery
  // What was last queued, to queue only changes.
  std::map<std::string, std::string> last_reports_;  // report loop only

  Mutex write_mu_;  // one writer at a time on the stream

  std::thread session_thread_;
  std::thread report_thread_;
  std::thread delivery_thread_;
  std::thread worker_thread_;
  bool started_ = false;
};

}  // namespace fedge::edge::agent

#endif  // FEDGE_EDGE_AGENT_AGENT_H_
