#include "edge/agent/agent.h"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/metrics/metrics.h"
#include "common/net/identity.h"
#include "common/net/servers.h"
#include "common/status/grpc_status.h"
#include "common/status/status.h"
#include "common/tensor/sha256.h"
#include "common/torch/model.h"
#include "glog/logging.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace fedge::edge::agent {
namespace {

constexpr int64_t kChunkBytes = 1 << 20;

prometheus::Histogram& TrainSeconds() {
  static auto& h =
      metrics::HistogramFamily("fedge_edge_train_duration_seconds",
                               "Wall time of local training per task, download and upload "
                               "excluded.")
          .Add({}, prometheus::Histogram::BucketBoundaries{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                                                           120, 300, 600, 1800, 3600});
  return h;
}

prometheus::Counter& TasksCounter(const std::string& result) {
  return metrics::CounterFamily("fedge_edge_tasks_total",
                                "Training tasks finished by this edge, by result.")
      .Add({{"result", result}});
}

prometheus::Gauge& ConnectedGauge() {
  static auto& g = metrics::GaugeFamily("fedge_edge_connected",
                                        "1 while the Session stream to the cloud is open.")
                       .Add({});
  return g;
}

prometheus::Counter& ReconnectsCounter() {
  static auto& c = metrics::CounterFamily("fedge_edge_reconnects_total",
                                          "Session streams that ended and were dialled again.")
                       .Add({});
  return c;
}

// Transient failures worth another try; the rest are the caller's fault and final.
bool Retryable(const grpc::Status& st) {
  return st.error_code() == grpc::StatusCode::UNAVAILABLE ||
         st.error_code() == grpc::StatusCode::DATA_LOSS ||  // corrupted in transit: resend
         st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
         st.error_code() == grpc::StatusCode::ABORTED ||
         st.error_code() == grpc::StatusCode::CANCELLED;
}

}  // namespace

Agent::Agent(Options options)
    : options_(std::move(options)),
      channel_(net::MakeChannel(options_.cloud_address, options_.tls)),
      stub_(v1::Fleet::NewStub(channel_)),
      downloader_(Downloader::Options{stub_.get(), options_.node_id, options_.runtime,
                                      options_.rpc_timeout, 8, absl::Milliseconds(200),
                                      absl::Seconds(5), [this] { return Stopping(); }}) {
  for (const char* r : {"uploaded", "failed"}) TasksCounter(r);
  TrainSeconds();
  ConnectedGauge();
  ReconnectsCounter();
}

Agent::~Agent() { Stop(); }

bool Agent::Stopping() {
  MutexLock lock(&mu_);
  return stopping_;
}

void Agent::Start() {
  started_ = true;
  session_thread_ = std::thread([this] { SessionLoop(); });
  report_thread_ = std::thread([this] { ReportLoop(); });
  delivery_thread_ = std::thread([this] { DeliveryLoop(); });
  worker_thread_ = std::thread([this] { WorkerLoop(); });
}

void Agent::Stop() {
  if (!started_) return;
  {
    MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    if (session_context_ != nullptr) session_context_->TryCancel();
    cv_.SignalAll();
  }
  session_thread_.join();
  report_thread_.join();
  delivery_thread_.join();
  worker_thread_.join();
}

bool Agent::SendOnSession(const v1::EdgeMessage& message) {
  MutexLock write_lock(&write_mu_);
  Stream* stream;
  {
    MutexLock lock(&mu_);
    stream = stream_;
  }
  return stream != nullptr && stream->Write(message);
}

void Agent::SessionLoop() {
  std::mt19937_64 rng(options_.seed ^ std::hash<std::string>()(options_.node_id));
  absl::Duration backoff = options_.initial_backoff;
  bool first = true;
  while (true) {
    {
      MutexLock lock(&mu_);
      if (stopping_) break;
    }
    if (!first) ReconnectsCounter().Increment();
    first = false;
    absl::Status ready = options_.before_session ? options_.before_session() : absl::OkStatus();
    if (!ready.ok()) {
      LOG(WARNING) << "node=" << options_.node_id << " cannot connect yet: " << ready;
      std::uniform_real_distribution<double> jitter(0.5, 1.0);
      absl::Duration sleep = backoff * jitter(rng);
      backoff = std::min(backoff * 2, options_.max_backoff);
      MutexLock lock(&mu_);
      if (!stopping_) cv_.WaitWithTimeout(&mu_, sleep);
      continue;
    }
    grpc::ClientContext context;
    net::SetCallerNodeId(&context, options_.node_id);
    std::unique_ptr<Stream> stream;
    {
      MutexLock lock(&mu_);
      if (stopping_) break;
      session_context_ = &context;
    }
    stream = stub_->Session(&context);
    v1::EdgeMessage hello_msg;
    v1::Hello* hello = hello_msg.mutable_hello();
    hello->set_node_id(options_.node_id);
    for (const auto& [k, v] : options_.labels) (*hello->mutable_labels())[k] = v;
    for (const auto& c : options_.capabilities) hello->add_capabilities(c);
    for (const auto& [name, ref] : options_.runtime->ActiveVersions()) {
      (*hello->mutable_active_versions())[name] = ref;
    }
    hello->set_software_version(options_.software_version);
    hello->set_protocol_version(1);
    if (options_.local_samples) hello->set_local_samples(options_.local_samples());
    hello->set_outbox_epoch(options_.outbox->epoch());
    hello->set_cpu_cores(options_.cpu_cores > 0
                             ? options_.cpu_cores
                             : static_cast<int32_t>(std::thread::hardware_concurrency()));
    hello->set_memory_mb(options_.memory_mb > 0
                             ? options_.memory_mb
                             : static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) *
                                   sysconf(_SC_PAGE_SIZE) / (1024 * 1024));

    bool ok = stream->Write(hello_msg);
    if (ok) {
      MutexLock write_lock(&write_mu_);
      MutexLock lock(&mu_);
      stream_ = stream.get();
    }
    v1::CloudMessage in;
    while (ok && stream->Read(&in)) {
      switch (in.kind_case()) {
        case v1::CloudMessage::kHelloAck: {
          connected_ = true;
          ConnectedGauge().Set(1);
          backoff = options_.initial_backoff;
          {
            MutexLock lock(&mu_);
            if (in.hello_ack().heartbeat_interval_ms() > 0) {
              heartbeat_interval_ = absl::Milliseconds(in.hello_ack().heartbeat_interval_ms());
            }
          }
          LOG(INFO) << "node=" << options_.node_id << " connected to " << options_.cloud_address
                    << "; " << options_.outbox->stats().messages
                    << " outbox messages queued, the cloud "
                    << "has applied up to " << in.hello_ack().applied_message_id();
          OnApplied(in.hello_ack().applied_message_id(), /*new_session=*/true);
          break;
        }
        case v1::CloudMessage::kAck:
          OnApplied(in.ack().applied_message_id(), /*new_session=*/false);
          break;
        case v1::CloudMessage::kTrainTask:
        case v1::CloudMessage::kEvaluate:
        case v1::CloudMessage::kDeploy: {
          MutexLock lock(&mu_);
          work_.push_back(in);
          cv_.SignalAll();
          break;
        }
        default:
          break;
      }
    }
    {
      MutexLock write_lock(&write_mu_);
      MutexLock lock(&mu_);
      stream_ = nullptr;
      delivering_ = false;
      cv_.SignalAll();
    }
    stream->WritesDone();
    grpc::Status st = stream->Finish();
    {
      MutexLock lock(&mu_);
      session_context_ = nullptr;
    }
    if (connected_) {
      LOG(WARNING) << "node=" << options_.node_id << " session ended: "
                   << (st.ok() ? "closed by cloud" : st.error_message());
    } else {
      VLOG(1) << "node=" << options_.node_id << " cannot reach " << options_.cloud_address
              << ": " << st.error_message();
    }
    connected_ = false;
    ConnectedGauge().Set(0);
    // Exponential backoff with full jitter, so a thousand gateways do not return in step.
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    absl::Duration sleep = backoff * jitter(rng);
    backoff = std::min(backoff * 2, options_.max_backoff);
    MutexLock lock(&mu_);
    if (!stopping_) cv_.WaitWithTimeout(&mu_, sleep);
  }
}

void Agent::OnApplied(uint64_t applied_id, bool new_session) {
  absl::Status st = options_.outbox->Ack(applied_id);
  if (!st.ok()) {
    // The messages stay queued and are resent; the cloud acknowledges them as duplicates.
    LOG(WARNING) << "node=" << options_.node_id << " cannot delete acknowledged messages: " << st;
  }
  MutexLock lock(&mu_);
  if (new_session) {
    ++session_gen_;
    delivering_ = true;
    sent_up_to_ = applied_id;
    acked_ = applied_id;
  } else {
    acked_ = std::max(acked_, applied_id);
  }
  cv_.SignalAll();
}

void Agent::Enqueue(v1::EdgeMessage message) {
  absl::StatusOr<uint64_t> id = options_.outbox->Push(message);
  if (!id.ok()) {
    // The disk is full or failing: better to try the live session than to lose the message.
    LOG(ERROR) << "node=" << options_.node_id
               << " cannot queue a message for the cloud: " << id.status();
    SendOnSession(message);
    return;
  }
  MutexLock lock(&mu_);
  ++pushes_;
  cv_.SignalAll();
}

void Agent::DeliveryLoop() {
  const int window = std::max(options_.delivery_window, 1);
  while (true) {
    uint64_t gen;
    uint64_t after;
    uint64_t pushes;
    {
      MutexLock lock(&mu_);
      auto in_flight = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return sent_up_to_ > acked_ ? sent_up_to_ - acked_ : 0;
      };
      while (!stopping_ && (!delivering_ || in_flight() >= static_cast<uint64_t>(window))) {
        cv_.Wait(&mu_);
      }
      if (stopping_) return;
      gen = session_gen_;
      after = sent_up_to_;
      pushes = pushes_;
    }
    auto batch = options_.outbox->After(after, std::min(window, 64));
    if (!batch.ok()) {
      LOG(ERROR) << "node=" << options_.node_id << " cannot read the outbox: " << batch.status();
      MutexLock lock(&mu_);
      if (!stopping_) cv_.WaitWithTimeout(&mu_, absl::Seconds(1));
      continue;
    }
    if (batch->empty()) {
      // Everything queued is on the wire: wait for a push or a new session.
      MutexLock lock(&mu_);
      while (!stopping_ && pushes_ == pushes && session_gen_ == gen && delivering_) cv_.Wait(&mu_);
      continue;
    }
    for (const v1::EdgeMessage& message : *batch) {
      {
        MutexLock lock(&mu_);
        if (stopping_ || session_gen_ != gen || !delivering_) break;
      }
      if (!SendOnSession(message)) break;  // the session ended; the next one resends
      MutexLock lock(&mu_);
      if (session_gen_ == gen) sent_up_to_ = message.message_id();
    }
  }
}

void Agent::ReportLoop() {
  // Queues a report only when it differs from the last one queued under the same key.
  auto queue_if_changed = [this](const std::string& key, v1::EdgeMessage message,
                                 const google::protobuf::Message& content) {
    std::string bytes;
    {
      google::protobuf::io::StringOutputStream out(&bytes);
      google::protobuf::io::CodedOutputStream coded(&out);
      coded.SetSerializationDeterministic(true);
      content.SerializeToCodedStream(&coded);
    }
    std::string& last = last_reports_[key];
    if (last == bytes) return;
    last = std::move(bytes);
    Enqueue(std::move(message));
  };
  absl::Time next_credentials_check = absl::Now() + absl::Minutes(1);
  while (true) {
    absl::Duration interval;
    {
      MutexLock lock(&mu_);
      if (stopping_) return;
      interval = heartbeat_interval_;
      cv_.WaitWithTimeout(&mu_, interval);
      if (stopping_) return;
    }
    if (connected_) {
      v1::EdgeMessage msg;
      msg.mutable_heartbeat()->set_sent_unix_ms(absl::ToUnixMillis(absl::Now()));
      SendOnSession(msg);
    }
    // A long session must not outlive the node's certificate: renew while connected too.
    if (options_.before_session && absl::Now() >= next_credentials_check) {
      next_credentials_check = absl::Now() + absl::Minutes(1);
      if (absl::Status st = options_.before_session(); !st.ok()) {
        LOG(WARNING) << "node=" << options_.node_id << " credentials: " << st;
      }
    }
    if (options_.drift_reports) {
      for (auto& report : options_.drift_reports()) {
        v1::EdgeMessage drift;
        *drift.mutable_drift() = std::move(report);
        Enqueue(std::move(drift));
      }
    }
    if (options_.health_reports) {
      for (auto& report : options_.health_reports()) {
        // Compare without the send time, which always differs.
        v1::HealthReport content = report;
        content.clear_sent_unix_ms();
        content.clear_window_ms();
        v1::EdgeMessage health;
        *health.mutable_health() = std::move(report);
        queue_if_changed("health/" + content.version().sha256(), std::move(health), content);
      }
    }
    if (options_.metrics) {
      v1::EdgeMessage metrics;
      for (const auto& [name, value] : options_.metrics()) {
        (*metrics.mutable_metrics()->mutable_values())[name] = value;
      }
      if (!metrics.metrics().values().empty()) {
        v1::MetricsReport content = metrics.metrics();
        queue_if_changed("metrics", std::move(metrics), content);
      }
    }
  }
}

void Agent::WorkerLoop() {
  while (true) {
    v1::CloudMessage work;
    {
      MutexLock lock(&mu_);
      while (!stopping_ && work_.empty()) cv_.Wait(&mu_);
      if (stopping_) return;
      work = std::move(work_.front());
      work_.pop_front();
    }
    if (work.has_train_task()) {
      const v1::TrainTask& task = work.train_task();
      absl::Status st = RunTask(task);
      v1::EdgeMessage status;
      status.mutable_task_status()->set_task_id(task.task_id());
      if (st.ok()) {
        status.mutable_task_status()->set_state(v1::TASK_UPLOADED);
        TasksCounter("uploaded").Increment();
        ++tasks_done_;
      } else {
        LOG(WARNING) << "node=" << options_.node_id << " job=" << task.job_id()
                     << " round=" << task.round() << " task failed: " << st;
        status.mutable_task_status()->set_state(v1::TASK_FAILED);
        status.mutable_task_status()->set_message(std::string(st.message()));
        TasksCounter("failed").Increment();
      }
      Enqueue(std::move(status));
    } else if (work.has_evaluate()) {
      v1::EdgeMessage answer;
      *answer.mutable_evaluate_result() = RunEvaluate(work.evaluate());
      Enqueue(std::move(answer));
    } else if (work.has_deploy()) {
      absl::Status st = RunDeploy(work.deploy().version(), work.deploy().schema_hash());
      v1::EdgeMessage status;
      *status.mutable_deploy_status()->mutable_version() = work.deploy().version();
      status.mutable_deploy_status()->set_ok(st.ok());
      status.mutable_deploy_status()->set_message(std::string(st.message()));
      if (!st.ok()) {
        LOG(WARNING) << "node=" << options_.node_id << " deploy of "
                     << work.deploy().version().model() << " v"
                     << work.deploy().version().version() << " failed: " << st;
      }
      Enqueue(std::move(status));
    }
  }
}

absl::StatusOr<std::string> Agent::Fetch(const std::string& sha256, int64_t* downloaded) {
  return downloader_.Fetch(sha256, downloaded);
}

absl::Status Agent::Upload(const v1::UpdateHeader& header, const std::string& payload,
                           int64_t deadline_unix_ms) {
  // Retries while the link is down, until the task's deadline (or a few times without one).
  constexpr int kAttemptsWithoutDeadline = 8;
  std::mt19937_64 rng(options_.seed ^ std::hash<std::string>()(header.task_id()));
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  absl::Duration backoff = options_.initial_backoff;
  grpc::Status st;
  for (int attempt = 1;; ++attempt) {
    // After a broken attempt, send only what the cloud does not hold yet.
    int64_t start = 0;
    if (attempt > 1) {
      grpc::ClientContext offset_context;
      net::SetCallerNodeId(&offset_context, options_.node_id);
      offset_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
      v1::UploadOffsetRequest request;
      request.set_task_id(header.task_id());
      request.set_sha256(header.sha256());
      v1::UploadOffsetResponse held;
      if (stub_->UploadOffset(&offset_context, request, &held).ok() && held.received_bytes() > 0 &&
          held.received_bytes() < static_cast<int64_t>(payload.size())) {
        start = held.received_bytes();
        LOG(INFO) << "node=" << options_.node_id << " task=" << header.task_id()
                  << " resuming the upload at byte " << start << " of " << payload.size();
      }
    }
    grpc::ClientContext context;
    net::SetCallerNodeId(&context, options_.node_id);
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
    v1::UploadResponse response;
    auto writer = stub_->UploadUpdate(&context, &response);
    v1::UploadRequest msg;
    *msg.mutable_header() = header;
    bool ok = writer->Write(msg);
    for (int64_t off = start; ok && off < static_cast<int64_t>(payload.size());
         off += kChunkBytes) {
      v1::UploadRequest chunk;
      chunk.mutable_chunk()->set_offset(off);
      chunk.mutable_chunk()->set_data(payload.substr(static_cast<size_t>(off), kChunkBytes));
      ok = writer->Write(chunk);
    }
    writer->WritesDone();
    st = writer->Finish();
    if (attempt > 1 && st.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
      // An earlier attempt landed; only its answer was lost.
      return absl::OkStatus();
    }
    if (st.ok() || !Retryable(st)) break;
    const absl::Duration wait = backoff * jitter(rng);
    if (deadline_unix_ms > 0) {
      if (absl::ToUnixMillis(absl::Now() + wait) > deadline_unix_ms) {
        return absl::DeadlineExceededError(
            absl::StrCat("the task's deadline passed while the cloud was unreachable (",
                         st.error_message(), "); the update is abandoned"));
      }
    } else if (attempt >= kAttemptsWithoutDeadline) {
      break;
    }
    VLOG(1) << "node=" << options_.node_id << " upload attempt " << attempt
            << " failed: " << st.error_message() << "; retrying";
    MutexLock lock(&mu_);
    if (stopping_) break;
    cv_.WaitWithTimeout(&mu_, wait);
    if (stopping_) break;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  return FromGrpcStatus(st);
}

absl::StatusOr<std::string> Agent::EncodeUpdate(const v1::TrainTask& task,
                                                const runtime::LocalUpdate& update) const {
  auto encoding = codec::EncodingFromWire(
      task.encoding() == v1::ENCODING_UNSPECIFIED ? v1::F32 : task.encoding());
  if (!encoding.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the task asks for update encoding ",
                                                   task.encoding(), ", which this edge does not "
                                                   "know; upgrade fedge-edge"));
  }
  codec::CodecParams params;
  params.encoding = *encoding;
  if (task.topk_fraction() > 0) params.topk_fraction = task.topk_fraction();
  if (task.block_size() > 0) params.block_size = task.block_size();
  // Stochastic rounding draws differ per node, so their errors do not line up.
  const uint64_t seed = task.seed() ^ std::hash<std::string>()(options_.node_id);
  const bool sparse =
      params.encoding == codec::Encoding::kTopK || params.encoding == codec::Encoding::kTopKInt8;
  if (sparse && options_.error_feedback != nullptr) {
    // The residual belongs to the job: a new job starts from another base, so what an earlier
    // job left unsent does not apply to it.
    FEDGE_RETURN_IF_ERROR(options_.error_feedback->KeepOnly(task.job_id()));
    return options_.error_feedback->Compress(task.job_id(), update.delta, params, seed);
  }
  return codec::Encode(update.delta, params, seed);
}

absl::Status Agent::RunTask(const v1::TrainTask& task) {
  if (task.deadline_unix_ms() > 0 && absl::ToUnixMillis(absl::Now()) > task.deadline_unix_ms()) {
    return absl::DeadlineExceededError("the task's deadline passed before it started");
  }
  const data::Dataset train = options_.training_data ? options_.training_data() : data::Dataset();
  if (train.size() == 0) {
    return absl::FailedPreconditionError("this node has no local training data");
  }
  VLOG(1) << "node=" << options_.node_id << " job=" << task.job_id() << " round=" << task.round()
          << " training";
  int64_t downloaded = 0;
  FEDGE_ASSIGN_OR_RETURN(std::string base, Fetch(task.base_sha256(), &downloaded));
  static const data::Dataset kEmpty;
  const absl::Time train_start = absl::Now();
  FEDGE_ASSIGN_OR_RETURN(
      runtime::LocalUpdate update,
      runtime::Runtime::Train(task, base, train,
                              options_.holdout_data ? *options_.holdout_data : kEmpty,
                              options_.train_limits));
  TrainSeconds().Observe(absl::ToDoubleSeconds(absl::Now() - train_start));
  v1::UpdateHeader header;
  header.set_task_id(task.task_id());
  header.set_job_id(task.job_id());
  header.set_round(task.round());
  header.set_schema_hash(update.schema_hash);
  header.set_num_samples(update.num_samples);
  FEDGE_ASSIGN_OR_RETURN(const std::string payload, EncodeUpdate(task, update));
  header.set_encoding(task.encoding() == v1::ENCODING_UNSPECIFIED ? v1::F32 : task.encoding());
  header.set_total_size(static_cast<int64_t>(payload.size()));
  header.set_sha256(Sha256Hex(payload));
  for (const auto& [k, v] : update.metrics) (*header.mutable_metrics())[k] = v;
  (*header.mutable_metrics())["bytes_down"] = static_cast<double>(downloaded);
  if (options_.on_update_sent) options_.on_update_sent(header, update.delta);
  FEDGE_RETURN_IF_ERROR(Upload(header, payload, task.deadline_unix_ms()));
  LOG(INFO) << "node=" << options_.node_id << " job=" << task.job_id()
            << " round=" << task.round() << " update sent: " << update.num_samples
            << " samples, train_loss=" << update.metrics["train_loss"];
  return absl::OkStatus();
}

v1::EvaluateResult Agent::RunEvaluate(const v1::EvaluateTask& task) {
  v1::EvaluateResult result;
  result.set_task_id(task.task_id());
  auto evaluate = [&]() -> absl::Status {
    if (options_.holdout_data == nullptr || options_.holdout_data->size() == 0) {
      return absl::FailedPreconditionError("this node has no labelled local holdout");
    }
    int64_t downloaded = 0;
    FEDGE_ASSIGN_OR_RETURN(std::string archive, Fetch(task.version().sha256(), &downloaded));
    FEDGE_ASSIGN_OR_RETURN(auto model, torchlib::Model::Load(archive));
    if (!task.schema_hash().empty() && model->schema().Hash() != task.schema_hash()) {
      return absl::FailedPreconditionError("the archive's schema is not the task's");
    }
    FEDGE_ASSIGN_OR_RETURN(v1::ModelContract contract, runtime::ReadContract(*model));
    const auto& norm = contract.normalization();
    if (norm.mean_size() > 0 && !norm.in_module()) {
      FEDGE_RETURN_IF_ERROR(model->SetInputNormalization(
          {norm.mean().begin(), norm.mean().end()}, {norm.std().begin(), norm.std().end()}));
    }
    FEDGE_ASSIGN_OR_RETURN(torchlib::EvalResult eval, model->Evaluate(*options_.holdout_data));
    result.set_num_samples(eval.num_samples);
    result.set_correct(static_cast<int64_t>(std::llround(eval.accuracy * eval.num_samples)));
    result.set_loss_sum(eval.loss * static_cast<double>(eval.num_samples));
    return absl::OkStatus();
  };
  absl::Status st = evaluate();
  if (!st.ok()) {
    result.set_error(std::string(st.message()));
    LOG(WARNING) << "node=" << options_.node_id << " evaluation of " << task.version().model()
                 << " v" << task.version().version() << " failed: " << st;
  }
  return result;
}

absl::Status Agent::RunDeploy(const v1::VersionRef& version, const std::string& schema_hash) {
  // A rollback to the version just replaced needs no download or load.
  if (options_.on_activated) options_.on_activated(version);
  FEDGE_ASSIGN_OR_RETURN(bool instant, options_.runtime->ActivatePrevious(version));
  if (instant) {
    LOG(INFO) << "node=" << options_.node_id << " swapped back to " << version.model() << " v"
              << version.version() << " (kept loaded)";
    return absl::OkStatus();
  }
  int64_t downloaded = 0;
  FEDGE_ASSIGN_OR_RETURN(std::string archive, Fetch(version.sha256(), &downloaded));
  FEDGE_RETURN_IF_ERROR(options_.runtime->Activate(version, archive, schema_hash));
  LOG(INFO) << "node=" << options_.node_id << " now serving " << version.model() << " v"
            << version.version();
  return absl::OkStatus();
}

}  // namespace fedge::edge::agent
