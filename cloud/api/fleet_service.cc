#include "cloud/api/fleet_service.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cloud/api/blob_stream.h"
#include "cloud/api/upload_stage.h"
#include "common/metrics/metrics.h"
#include "common/net/identity.h"
#include "common/status/grpc_status.h"
#include "common/status/quote.h"
#include "common/status/status.h"
#include "common/sync/mutex.h"
#include "common/tensor/sha256.h"
#include "glog/logging.h"
#include "grpcpp/alarm.h"

namespace fedge::cloud::api {
namespace {

prometheus::Counter& ResumedUploads() {
  static auto& c = metrics::CounterFamily(
                       "fedge_cloud_uploads_resumed_total",
                       "Updates whose upload continued from the part an earlier attempt left.")
                       .Add({});
  return c;
}

// Appended to a rate-limited log line: how many like it were left out before it.
std::string Suppressed(int64_t n) {
  return n > 0 ? absl::StrCat(" (", n, " similar lines suppressed)") : "";
}

prometheus::Counter& SessionPacedCounter() {
  static auto& c = LimitedCounter("session_rate");
  return c;
}

prometheus::Counter& SessionBoundsCounter() {
  static auto& c = LimitedCounter("session_bounds");
  return c;
}

prometheus::Counter& DriftReports() {
  static auto& c = metrics::CounterFamily("fedge_cloud_drift_reports_total",
                                          "Sustained input drift reported by edges.")
                       .Add({});
  return c;
}

class SessionReactor;

// The outbound side of one Session: a queue that the fleet may push to from any thread. At
// most one write is in flight; Finish waits for it (gRPC forbids Finish with a write pending).
class Outbox : public fleet::SessionSink {
 public:
  // `on_send` sees every message before it is queued.
  Outbox(grpc::ServerBidiReactor<v1::EdgeMessage, v1::CloudMessage>* reactor,
         std::function<void(const v1::CloudMessage&)> on_send)
      : reactor_(reactor), on_send_(std::move(on_send)) {}

  bool Send(const v1::CloudMessage& message) override {
    on_send_(message);
    MutexLock lock(&mu_);
    if (reactor_ == nullptr || finishing_) return false;
    queue_.push_back(message);
    StartNextLocked();
    return true;
  }

  void Close(const absl::Status& status) override {
    MutexLock lock(&mu_);
    if (reactor_ == nullptr || finishing_) return;
    finishing_ = true;
    finish_status_ = ToGrpcStatus(status);
    queue_.clear();
    if (!writing_) reactor_->Finish(finish_status_);
  }

  // Reactor side.
  void OnWriteDone(bool ok) {
    MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      // The stream is broken; nothing more can be written.
      if (!finishing_) {
        finishing_ = true;
        finish_status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream broken");
      }
      queue_.clear();
    }
    if (finishing_) {
      if (reactor_ != nullptr) reactor_->Finish(finish_status_);
      return;
    }
    StartNextLocked();
  }

  void Detach() {
    MutexLock lock(&mu_);
    reactor_ = nullptr;
  }

 private:
  void StartNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || queue_.empty() || reactor_ == nullptr) return;
    current_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    reactor_->StartWrite(&current_);
  }

  Mutex mu_;
  grpc::ServerBidiReactor<v1::EdgeMessage, v1::CloudMessage>* reactor_ ABSL_GUARDED_BY(mu_);
  const std::function<void(const v1::CloudMessage&)> on_send_;
  std::deque<v1::CloudMessage> queue_ ABSL_GUARDED_BY(mu_);
  v1::CloudMessage current_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

class SessionReactor : public grpc::ServerBidiReactor<v1::EdgeMessage, v1::CloudMessage> {
 public:
  SessionReactor(grpc::CallbackServerContext* context, absl::StatusOr<std::string> node_id,
                 std::function<void(const std::string&, const v1::CloudMessage&)> on_send,
                 fleet::Fleet* fleet, jobs::JobManager* jobs, registry::Registry* registry,
                 deploy::Controller* deploy, evaluation::FederatedEvaluator* evaluator,
                 events::EventLog* events, policy::Retrainer* retrainer, inbox::Inbox* inbox,
                 enroll::Enrollment* enrollment, const SessionLimits& limits, LogLimiter* logs)
      : context_(context),
        limits_(limits),
        logs_(logs),
        bytes_(limits.bytes_per_second, limits.byte_burst),
        fleet_(fleet),
        jobs_(jobs),
        registry_(registry),
        deploy_(deploy),
        evaluator_(evaluator),
        events_(events),
        retrainer_(retrainer),
        inbox_(inbox),
        enrollment_(enrollment),
        // The fleet may hold the outbox after this reactor is gone: capture copies only.
        outbox_(std::make_shared<Outbox>(
            this, [on_send = std::move(on_send), id = node_id.ok() ? *node_id : std::string()](
                      const v1::CloudMessage& m) { on_send(id, m); })) {
    if (!node_id.ok()) {
      outbox_->Close(node_id.status());
      return;
    }
    node_id_ = *node_id;
    {
      MutexLock lock(&pending_->mu);
      pending_->reactor = this;
    }
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The edge half-closed or went away.
      outbox_->Close(absl::OkStatus());
      return;
    }
    absl::Status st = Handle();
    if (!st.ok()) {
      if (logs_->Allow(node_id_)) {
        LOG(WARNING) << "node=" << node_id_ << " session refused: " << st
                     << Suppressed(logs_->TakeSuppressed(node_id_));
      }
      outbox_->Close(st);
      return;
    }
    // Each kind has its pace; past it the next read waits, and flow control slows the edge.
    const absl::Time now = absl::Now();
    auto bucket = kinds_.find(in_.kind_case());
    if (bucket == kinds_.end()) {
      bucket = kinds_
                   .emplace(in_.kind_case(),
                            TokenBucket(limits_.messages_per_second, limits_.message_burst))
                   .first;
    }
    const absl::Duration wait = std::max(bucket->second.Take(1, now),
                                         bytes_.Take(static_cast<double>(in_.ByteSizeLong()), now));
    if (wait <= absl::ZeroDuration()) {
      StartRead(&in_);
      return;
    }
    SessionPacedCounter().Increment();
    std::shared_ptr<Pending> pending = pending_;
    // The previous alarm, if any, has fired: it started the read that got here.
    alarm_ = std::make_unique<grpc::Alarm>();
    alarm_->Set(absl::ToChronoTime(now + wait), [pending](bool) {
      MutexLock lock(&pending->mu);
      if (pending->reactor != nullptr) pending->reactor->StartRead(&pending->reactor->in_);
    });
  }

  void OnWriteDone(bool ok) override { outbox_->OnWriteDone(ok); }

  void OnDone() override {
    {
      // A paced read that has not started yet never will.
      MutexLock lock(&pending_->mu);
      pending_->reactor = nullptr;
    }
    if (session_id_ != 0) fleet_->Disconnect(node_id_, session_id_);
    outbox_->Detach();
    delete this;
  }

 private:
  // What a pacing alarm reaches: the reactor until OnDone.
  struct Pending {
    Mutex mu;
    SessionReactor* reactor ABSL_GUARDED_BY(mu);
  };

  absl::Status Handle() {
    if (session_id_ == 0 && !in_.has_hello()) {
      return absl::FailedPreconditionError("the first Session message must be a Hello");
    }
    if (absl::Status bounded = limits::CheckBounds(in_, limits_.bounds); !bounded.ok()) {
      const std::string kind = inbox::KindName(in_);
      SessionBoundsCounter().Increment();
      if (in_.message_id() == 0 || epoch_.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("Session ", kind, " message out of bounds: ", bounded.message()));
      }
      // An outbox message the edge would resend forever: acknowledged, so that it is deleted,
      // and dropped.
      if (logs_->Allow(node_id_)) {
        LOG(WARNING) << "node=" << node_id_ << " " << kind << " message " << in_.message_id()
                     << " dropped: " << bounded << Suppressed(logs_->TakeSuppressed(node_id_));
      }
      acked_ = std::max(acked_, in_.message_id());
      v1::CloudMessage ack;
      ack.mutable_ack()->set_applied_message_id(acked_);
      outbox_->Send(ack);
      return absl::OkStatus();
    }
    if (in_.message_id() == 0) return Dispatch();
    // An outbox message: applied at most once, then acknowledged so the edge can delete it.
    if (inbox_ == nullptr) {
      return absl::FailedPreconditionError("this coordinator keeps no inbox for outbox messages");
    }
    if (epoch_.empty()) {
      return absl::InvalidArgumentError(
          "an outbox message (message_id set) in a session whose Hello has no outbox_epoch");
    }
    absl::StatusOr<inbox::Inbox::Result> result = inbox_->Apply(node_id_, epoch_, in_);
    if (!result.ok()) {
      // Not acknowledged: the edge keeps the message and resends it on its next session.
      return absl::UnavailableError(absl::StrCat("cannot record message ", in_.message_id(), ": ",
                                                 result.status().message()));
    }
    // A duplicate is acknowledged too, so the edge can delete it.
    acked_ = std::max(acked_, in_.message_id());
    if (*result == inbox::Inbox::Result::kApplied) FEDGE_RETURN_IF_ERROR(Dispatch());
    v1::CloudMessage ack;
    ack.mutable_ack()->set_applied_message_id(acked_);
    outbox_->Send(ack);
    return absl::OkStatus();
  }

  absl::Status Dispatch() {
    switch (in_.kind_case()) {
      case v1::EdgeMessage::kHello: {
        if (session_id_ != 0) return absl::FailedPreconditionError("Hello sent twice");
        if (in_.hello().node_id() != node_id_) {
          return absl::PermissionDeniedError(
              absl::StrCat("Hello names node ", Quote(in_.hello().node_id()),
                           " but the call is from '", node_id_, "'"));
        }
        if (in_.hello().protocol_version() > 1) {
          LOG(INFO) << "node=" << node_id_ << " speaks protocol v" << in_.hello().protocol_version()
                    << "; this coordinator speaks v1";
        }
        epoch_ = in_.hello().outbox_epoch();
        if (!epoch_.empty() && inbox_ != nullptr) {
          FEDGE_ASSIGN_OR_RETURN(acked_, inbox_->Applied(node_id_, epoch_));
        }
        v1::Hello hello = in_.hello();
        if (enrollment_ != nullptr) {
          // Labels bound at enrollment are the operator's word, not the node's.
          for (const auto& [k, v] : enrollment_->BoundLabels(node_id_)) {
            (*hello.mutable_labels())[k] = v;
          }
        }
        session_id_ = fleet_->Connect(hello, context_->peer(), outbox_);
        v1::CloudMessage ack;
        ack.mutable_hello_ack()->set_applied_message_id(acked_);
        ack.mutable_hello_ack()->set_cloud_time_unix_ms(absl::ToUnixMillis(absl::Now()));
        ack.mutable_hello_ack()->set_heartbeat_interval_ms(
            absl::ToInt64Milliseconds(fleet_->heartbeat_interval()));
        outbox_->Send(ack);
        ConvergeToDesired();
        return absl::OkStatus();
      }
      case v1::EdgeMessage::kHeartbeat:
        fleet_->Heartbeat(node_id_, in_.heartbeat());
        return absl::OkStatus();
      case v1::EdgeMessage::kTaskStatus:
        jobs_->OnTaskStatus(node_id_, in_.task_status());
        return absl::OkStatus();
      case v1::EdgeMessage::kDeployStatus:
        fleet_->ReportDeploy(node_id_, in_.deploy_status());
        if (deploy_ != nullptr) deploy_->OnDeployStatus(node_id_, in_.deploy_status());
        return absl::OkStatus();
      case v1::EdgeMessage::kEvaluateResult:
        if (evaluator_ != nullptr) evaluator_->OnResult(node_id_, in_.evaluate_result());
        return absl::OkStatus();
      case v1::EdgeMessage::kDrift:
        OnDrift(in_.drift());
        return absl::OkStatus();
      case v1::EdgeMessage::kHealth:
        if (deploy_ != nullptr) deploy_->OnHealth(node_id_, in_.health());
        return absl::OkStatus();
      case v1::EdgeMessage::kMetrics:
        fleet_->ReportMetrics(node_id_, in_.metrics());
        return absl::OkStatus();
      case v1::EdgeMessage::KIND_NOT_SET:
        return absl::InvalidArgumentError("empty Session message");
    }
    return absl::OkStatus();
  }

  void OnDrift(const v1::DriftReport& report) {
    DriftReports().Increment();
    const bool counted = retrainer_ == nullptr || retrainer_->OnDrift(node_id_, report);
    // The report is bounded (SessionLimits), but a wide model may name many features: the log
    // and the event name the first few.
    constexpr int kNamed = 16;
    const int drifted = report.drifted_features_size();
    std::vector<std::string> named;
    for (int i = 0; i < std::min(drifted, kNamed); ++i) {
      named.push_back(Quote(report.drifted_features(i), 64));
    }
    const std::string more =
        drifted > kNamed ? absl::StrCat(" and ", drifted - kNamed, " more") : "";
    if (logs_->Allow(node_id_)) {
      LOG(WARNING) << "node=" << node_id_ << " reports drift in " << Quote(report.model()) << " v"
                   << report.version().version() << ": " << absl::StrJoin(named, ", ") << more
                   << Suppressed(logs_->TakeSuppressed(node_id_));
    }
    if (events_ == nullptr) return;
    v1::Event e;
    e.set_type("drift.detected");
    e.set_node_id(node_id_);
    e.set_model(report.model());
    e.set_version(report.version().version());
    std::vector<std::string> parts;
    for (int i = 0; i < std::min(drifted, kNamed); ++i) {
      const std::string& f = report.drifted_features(i);
      auto psi = report.psi().find(f);
      parts.push_back(psi == report.psi().end() ? f
                                                : absl::StrFormat("%s (PSI %.2f)", f, psi->second));
      (*e.mutable_attributes())[absl::StrCat("psi.", f)] =
          psi == report.psi().end() ? "" : absl::StrFormat("%.4f", psi->second);
    }
    (*e.mutable_attributes())["counted"] = counted ? "true" : "false";
    e.set_message(absl::StrCat("input drift on ", absl::StrJoin(parts, ", "), more, " at window ",
                               report.window_index(),
                               counted ? "" : " (stale: not counted toward retraining)"));
    events_->Append(std::move(e));
  }

  // A node that was offline during a deploy gets its desired versions when it returns.
  void ConvergeToDesired() {
    auto desired = registry_->DesiredVersions(node_id_);
    if (!desired.ok()) {
      LOG(WARNING) << "node=" << node_id_ << " cannot read desired versions: " << desired.status();
      return;
    }
    const auto& active = in_.hello().active_versions();
    for (const v1::VersionRef& want : *desired) {
      fleet_->SetDesired(node_id_, want);
      auto it = active.find(want.model());
      if (it != active.end() && it->second.sha256() == want.sha256()) continue;
      v1::CloudMessage deploy;
      *deploy.mutable_deploy()->mutable_version() = want;
      auto version = registry_->GetVersion(want.model(), want.version());
      if (version.ok()) deploy.mutable_deploy()->set_schema_hash(version->schema_hash());
      outbox_->Send(deploy);
      LOG(INFO) << "node=" << node_id_ << " converging to " << want.model() << " v"
                << want.version();
    }
  }

  grpc::CallbackServerContext* const context_;
  const SessionLimits& limits_;
  LogLimiter* const logs_;
  TokenBucket bytes_;
  std::map<v1::EdgeMessage::KindCase, TokenBucket> kinds_;
  std::shared_ptr<Pending> pending_ = std::make_shared<Pending>();
  std::unique_ptr<grpc::Alarm> alarm_;
  fleet::Fleet* const fleet_;
  jobs::JobManager* const jobs_;
  registry::Registry* const registry_;
  deploy::Controller* const deploy_;
  evaluation::FederatedEvaluator* const evaluator_;
  events::EventLog* const events_;
  policy::Retrainer* const retrainer_;
  inbox::Inbox* const inbox_;
  enroll::Enrollment* const enrollment_;
  std::string node_id_;
  std::shared_ptr<Outbox> outbox_;
  std::string epoch_;   // the Hello's outbox epoch
  uint64_t acked_ = 0;  // the high-water mark of epoch_ as this session knows it
  uint64_t session_id_ = 0;
  v1::EdgeMessage in_;
};

}  // namespace

grpc::ServerBidiReactor<v1::EdgeMessage, v1::CloudMessage>* FleetService::Session(
    grpc::CallbackServerContext* context) {
  return new SessionReactor(
      context, Authenticate(*context),
      [this](const std::string& node_id, const v1::CloudMessage& m) {
        if (m.has_train_task()) grants_.Add(node_id, m.train_task().base_sha256());
        if (m.has_deploy()) grants_.Add(node_id, m.deploy().version().sha256());
        if (m.has_evaluate()) grants_.Add(node_id, m.evaluate().version().sha256());
      },
      options_.fleet, options_.jobs, options_.registry, options_.deploy, options_.evaluator,
      options_.events, options_.retrainer, options_.inbox, options_.enrollment, options_.session,
      &logs_);
}

void FleetService::Grants::Add(const std::string& node_id, const std::string& sha256) {
  if (sha256.empty()) return;
  MutexLock lock(&mu_);
  std::deque<std::string>& shas = by_node_[node_id];
  if (std::find(shas.begin(), shas.end(), sha256) != shas.end()) return;
  shas.push_back(sha256);
  if (shas.size() > kPerNode) shas.pop_front();
}

bool FleetService::Grants::Has(const std::string& node_id, const std::string& sha256) const {
  MutexLock lock(&mu_);
  auto it = by_node_.find(node_id);
  return it != by_node_.end() &&
         std::find(it->second.begin(), it->second.end(), sha256) != it->second.end();
}

absl::StatusOr<std::string> FleetService::Authenticate(
    const grpc::ServerContextBase& context) const {
  FEDGE_ASSIGN_OR_RETURN(std::string node_id, net::CallerNodeId(context));
  if (options_.enrollment != nullptr) {
    FEDGE_RETURN_IF_ERROR(options_.enrollment->CheckNode(node_id));
  }
  return node_id;
}

absl::Status FleetService::MayDownload(const std::string& node_id,
                                       const std::string& sha256) const {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError("sha256 must be 64 hex digits");
  if (grants_.Has(node_id, sha256)) return absl::OkStatus();
  // After a coordinator restart the grants are gone, but what the node should run is stored.
  auto desired = options_.registry->DesiredVersions(node_id);
  if (desired.ok()) {
    for (const v1::VersionRef& ref : *desired) {
      if (ref.sha256() == sha256) return absl::OkStatus();
    }
  }
  return absl::PermissionDeniedError(
      absl::StrCat("node '", node_id, "' was not sent artifact ", sha256.substr(0, 12),
                   ": a node downloads only the models of its own tasks and deployments"));
}

namespace {

int64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
}

// "ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7": the rate-limit key of a caller with no identity.
std::string PeerHost(const std::string& peer) {
  size_t colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

// Bounds on the small requests of the Fleet port (the Session's are in SessionLimits).
const limits::MessageBounds& RequestBounds() {
  static const limits::MessageBounds b = {64 * 1024, 16 * 1024, 0, 256, 8};
  return b;
}

grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                      const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace

// One download: a chunk is read from disk and written per reaction, so a slow or stalled reader
// holds its slot and an open file, never a thread.
class FleetService::DownloadReactor : public grpc::ServerWriteReactor<v1::Chunk> {
 public:
  DownloadReactor(FleetService* service, grpc::CallbackServerContext* context,
                  const v1::DownloadRequest* request) {
    absl::Status st = Start(service, context, request);
    if (!st.ok()) {
      Finish(ToGrpcStatus(st));
      return;
    }
    WriteNext();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    watch_->Touch();
    WriteNext();
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Start(FleetService* service, grpc::CallbackServerContext* context,
                     const v1::DownloadRequest* request) {
    FEDGE_ASSIGN_OR_RETURN(const std::string node, service->Authenticate(*context));
    FEDGE_RETURN_IF_ERROR(service->limiter_.Admit(node));
    FEDGE_ASSIGN_OR_RETURN(slot_, service->slots_.Acquire(node));
    FEDGE_RETURN_IF_ERROR(service->MayDownload(node, request->sha256()));
    FEDGE_ASSIGN_OR_RETURN(reader_, BlobReader::Open(*service->options_.registry, request->sha256(),
                                                     request->offset()));
    watch_ = service->idle_.Start(context);
    return absl::OkStatus();
  }

  void WriteNext() {
    absl::StatusOr<bool> more = reader_->Next(&chunk_);
    if (!more.ok()) {
      Finish(ToGrpcStatus(more.status()));
    } else if (!*more) {
      Finish(grpc::Status::OK);
    } else {
      StartWrite(&chunk_);
    }
  }

  std::unique_ptr<StreamSlots::Slot> slot_;
  std::unique_ptr<BlobReader> reader_;
  std::unique_ptr<IdleStreams::Watch> watch_;
  v1::Chunk chunk_;
};

// One upload: the header is checked before anything is staged, each chunk is staged in the
// reaction that read it, and the last one validates and folds the whole.
class FleetService::UploadReactor : public grpc::ServerReadReactor<v1::UploadRequest> {
 public:
  UploadReactor(FleetService* service, grpc::CallbackServerContext* context,
                v1::UploadResponse* response)
      : service_(service), response_(response) {
    absl::Status st = Start(context);
    if (!st.ok()) {
      Finish(ToGrpcStatus(st));
      return;
    }
    StartRead(&msg_);
  }

  void OnReadDone(bool ok) override {
    absl::Status st = ok ? Take() : Complete();
    if (!ok || !st.ok()) {
      if (!st.ok() && service_->logs_.Allow(node_)) {
        LOG(WARNING) << "node=" << node_ << " upload refused: " << st
                     << Suppressed(service_->logs_.TakeSuppressed(node_));
      }
      Finish(ToGrpcStatus(st));
      return;
    }
    StartRead(&msg_);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Start(grpc::CallbackServerContext* context) {
    FEDGE_ASSIGN_OR_RETURN(node_, service_->Authenticate(*context));
    FEDGE_RETURN_IF_ERROR(service_->limiter_.Admit(node_));
    FEDGE_ASSIGN_OR_RETURN(slot_, service_->slots_.Acquire(node_));
    watch_ = service_->idle_.Start(context);
    return absl::OkStatus();
  }

  // One message of the stream: the header first, then chunks.
  absl::Status Take() {
    watch_->Touch();
    if (stage_ == nullptr) {
      if (!msg_.has_header()) {
        return absl::InvalidArgumentError("an upload must start with an UpdateHeader");
      }
      header_ = msg_.header();
      FEDGE_RETURN_IF_ERROR(limits::CheckBounds(header_, RequestBounds()));
      // Refuse early, before any payload is staged.
      FEDGE_RETURN_IF_ERROR(service_->options_.jobs->CheckUpload(node_, header_));
      if (!IsSha256Hex(header_.sha256())) {
        return absl::InvalidArgumentError("the header's sha256 is malformed");
      }
      // Stage the payload as it streams in: in a part file when there is an upload_dir (so
      // that a broken stream can resume), else in memory. CheckUpload bounded total_size by
      // the model size.
      std::string part;
      if (!service_->options_.upload_dir.empty()) {
        service_->SweepParts();
        part = service_->PartPath(node_, header_.task_id(), header_.sha256());
        FEDGE_RETURN_IF_ERROR(service_->ReservePart(node_, part, header_.total_size()));
      }
      stage_ = std::make_unique<UploadStage>(part, header_.total_size());
      return absl::OkStatus();
    }
    if (!msg_.has_chunk()) return absl::InvalidArgumentError("a second header in one upload");
    v1::Chunk* chunk = msg_.mutable_chunk();
    absl::Status st = stage_->AddChunk(chunk->offset(), std::move(*chunk->mutable_data()));
    if (st.code() == absl::StatusCode::kResourceExhausted) {
      LOG(ERROR) << "node=" << node_ << " upload for task " << Quote(header_.task_id())
                 << " not staged: " << st;
    }
    return st;
  }

  // The stream ended: check the whole and fold it.
  absl::Status Complete() {
    if (stage_ == nullptr) {
      if (watch_ != nullptr && watch_->timed_out()) return IdleError();
      return absl::InvalidArgumentError("an upload must start with an UpdateHeader");
    }
    if (stage_->resumed()) ResumedUploads().Increment();
    if (watch_->timed_out()) return IdleError();
    if (stage_->size() != header_.total_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "upload truncated: received ", stage_->size(), " of ", header_.total_size(), " bytes",
          service_->options_.upload_dir.empty() ? "" : "; the rest may follow"));
    }
    const std::string got = stage_->FinishDigest();
    if (got != header_.sha256()) {
      stage_->Discard();
      return absl::DataLossError(absl::StrCat("upload corrupted: payload sha256 ",
                                              got.substr(0, 12), " does not match the header's ",
                                              header_.sha256().substr(0, 12), "; send it again"));
    }
    FEDGE_ASSIGN_OR_RETURN(absl::string_view payload, stage_->Contents());
    absl::Status st = service_->options_.jobs->SubmitUpdate(node_, header_, payload);
    stage_->Discard();
    FEDGE_RETURN_IF_ERROR(st);
    response_->set_received_bytes(static_cast<int64_t>(payload.size()));
    return absl::OkStatus();
  }

  absl::Status IdleError() const {
    return absl::DeadlineExceededError(absl::StrCat(
        "the upload sent nothing for ", absl::FormatDuration(service_->idle_.idle_timeout()),
        "; the cloud keeps what arrived: ask UploadOffset and resume"));
  }

  FleetService* const service_;
  v1::UploadResponse* const response_;
  std::string node_;
  std::unique_ptr<StreamSlots::Slot> slot_;
  std::unique_ptr<IdleStreams::Watch> watch_;
  v1::UploadRequest msg_;
  v1::UpdateHeader header_;
  std::unique_ptr<UploadStage> stage_;
};

grpc::ServerWriteReactor<v1::Chunk>* FleetService::DownloadModel(
    grpc::CallbackServerContext* context, const v1::DownloadRequest* request) {
  return new DownloadReactor(this, context, request);
}

grpc::ServerReadReactor<v1::UploadRequest>* FleetService::UploadUpdate(
    grpc::CallbackServerContext* context, v1::UploadResponse* response) {
  return new UploadReactor(this, context, response);
}

grpc::ServerUnaryReactor* FleetService::UploadOffset(grpc::CallbackServerContext* context,
                                                     const v1::UploadOffsetRequest* request,
                                                     v1::UploadOffsetResponse* response) {
  return FinishUnary(context, DoUploadOffset(context, request, response));
}

grpc::ServerUnaryReactor* FleetService::Enroll(grpc::CallbackServerContext* context,
                                               const v1::EnrollRequest* request,
                                               v1::EnrollResponse* response) {
  return FinishUnary(context, DoEnroll(context, request, response));
}

grpc::ServerUnaryReactor* FleetService::RenewCertificate(grpc::CallbackServerContext* context,
                                                         const v1::RenewCertificateRequest* request,
                                                         v1::EnrollResponse* response) {
  return FinishUnary(context, DoRenewCertificate(context, request, response));
}

FleetService::FleetService(Options options)
    : options_(std::move(options)),
      limiter_(options_.rate_limit),
      idle_(options_.upload_idle_timeout),
      slots_(options_.streams) {
  ResumedUploads();  // the series exists, at zero, from the start
  DriftReports();
  LimitedCounter("session_rate");
  LimitedCounter("session_bounds");
  LimitedCounter("parts");
  if (options_.upload_dir.empty()) return;
  if (::mkdir(options_.upload_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    LOG(WARNING) << "cannot create " << options_.upload_dir << ": " << std::strerror(errno)
                 << "; interrupted uploads will start over";
    return;
  }
  SweepParts();
}

void FleetService::SweepParts() {
  // Parts nobody came back for within a day are dropped; checked at most once an hour.
  const auto now = std::filesystem::file_time_type::clock::now();
  const int64_t now_s = absl::ToUnixSeconds(absl::Now());
  int64_t last = last_sweep_unix_s_.load();
  if (now_s - last < 3600 && last != 0) return;
  if (!last_sweep_unix_s_.compare_exchange_strong(last, now_s)) return;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(options_.upload_dir, ec)) {
    if (entry.path().extension() == ".part" &&
        entry.last_write_time(ec) < now - std::chrono::hours(24)) {
      std::filesystem::remove(entry.path(), ec);
    }
  }
}

namespace {

std::string NodePartPrefix(const std::string& node_id) {
  return Sha256Hex(absl::StrCat("node\n", node_id)).substr(0, 16);
}

}  // namespace

std::string FleetService::PartPath(const std::string& node_id, const std::string& task_id,
                                   const std::string& sha256) const {
  // Hashed, so no byte of what the edge sent reaches the file name.
  return absl::StrCat(options_.upload_dir, "/", NodePartPrefix(node_id), "-",
                      Sha256Hex(absl::StrCat(node_id, "\n", task_id, "\n", sha256)).substr(0, 32),
                      ".part");
}

absl::Status FleetService::ReservePart(const std::string& node_id, const std::string& path,
                                       int64_t bytes) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return absl::OkStatus();  // resuming its own part
  MutexLock lock(&parts_mu_);
  const std::string mine = NodePartPrefix(node_id) + "-";
  std::vector<std::pair<std::filesystem::file_time_type, std::filesystem::path>> own;
  int count = 0;
  int64_t total = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(options_.upload_dir, ec)) {
    if (entry.path().extension() != ".part") continue;
    const int64_t size = static_cast<int64_t>(entry.file_size(ec));
    if (entry.path().filename().string().rfind(mine, 0) == 0) {
      own.emplace_back(entry.last_write_time(ec), entry.path());
    }
    ++count;
    total += ec ? 0 : size;
  }
  // The node's oldest parts make room for its new one: a node that invents digests only ever
  // holds parts_per_node of them.
  std::sort(own.begin(), own.end());
  for (size_t i = 0; i + options_.parts_per_node <= own.size(); ++i) {
    total -= FileSize(own[i].second.string());
    --count;
    std::filesystem::remove(own[i].second, ec);
  }
  if (count + 1 > options_.max_parts || total + bytes > options_.max_part_bytes) {
    LimitedCounter("parts").Increment();
    return absl::ResourceExhaustedError(
        absl::StrCat("the coordinator holds ", count, " interrupted uploads (", total,
                     " bytes; limits ", options_.max_parts, " and ", options_.max_part_bytes,
                     " bytes): retry later, when older parts have been completed or expired"));
  }
  return absl::OkStatus();
}

grpc::Status FleetService::DoUploadOffset(grpc::CallbackServerContext* context,
                                          const v1::UploadOffsetRequest* request,
                                          v1::UploadOffsetResponse* response) {
  auto node = Authenticate(*context);
  if (!node.ok()) return ToGrpcStatus(node.status());
  if (absl::Status st = limiter_.Admit(*node); !st.ok()) return ToGrpcStatus(st);
  if (!IsSha256Hex(request->sha256())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "sha256 must be 64 hex digits");
  }
  if (!options_.upload_dir.empty()) {
    response->set_received_bytes(FileSize(PartPath(*node, request->task_id(), request->sha256())));
  }
  return grpc::Status::OK;
}

grpc::Status FleetService::DoEnroll(grpc::CallbackServerContext* context,
                                    const v1::EnrollRequest* request,
                                    v1::EnrollResponse* response) {
  if (options_.enrollment == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this coordinator runs without TLS (--insecure) and enrolls no one");
  }
  const std::string peer_host = PeerHost(context->peer());
  if (absl::Status st = limiter_.Admit(absl::StrCat("enroll@", peer_host)); !st.ok()) {
    return ToGrpcStatus(st);
  }
  if (absl::Status st = limits::CheckBounds(*request, RequestBounds()); !st.ok()) {
    return ToGrpcStatus(st);
  }
  auto enrolled = options_.enrollment->Enroll(*request);
  if (!enrolled.ok()) {
    if (logs_.Allow(peer_host)) {
      LOG(WARNING) << "enrollment of " << Quote(request->node_id()) << " from " << peer_host
                   << " refused: " << Quote(enrolled.status().ToString(), 256)
                   << Suppressed(logs_.TakeSuppressed(peer_host));
    }
    return ToGrpcStatus(enrolled.status());
  }
  *response = std::move(*enrolled);
  if (options_.events != nullptr) {
    v1::Event e;
    e.set_type("node.enrolled");
    e.set_node_id(request->node_id());
    e.set_message(absl::StrCat(request->node_id(), " enrolled from ", context->peer()));
    options_.events->Append(std::move(e));
  }
  return grpc::Status::OK;
}

grpc::Status FleetService::DoRenewCertificate(grpc::CallbackServerContext* context,
                                              const v1::RenewCertificateRequest* request,
                                              v1::EnrollResponse* response) {
  if (options_.enrollment == nullptr) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        "this coordinator runs without TLS (--insecure) and issues no certificates");
  }
  auto node = Authenticate(*context);
  if (!node.ok()) return ToGrpcStatus(node.status());
  if (absl::Status st = limiter_.Admit(*node); !st.ok()) return ToGrpcStatus(st);
  if (absl::Status st = limits::CheckBounds(*request, RequestBounds()); !st.ok()) {
    return ToGrpcStatus(st);
  }
  auto renewed = options_.enrollment->Renew(*node, request->csr_pem());
  if (!renewed.ok()) return ToGrpcStatus(renewed.status());
  *response = std::move(*renewed);
  return grpc::Status::OK;
}

}  // namespace fedge::cloud::api
