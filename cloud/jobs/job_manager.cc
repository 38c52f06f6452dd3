#include "cloud/jobs/job_manager.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cloud/aggregation/strategy.h"
#include "cloud/events/event_log.h"
#include "cloud/models/validator.h"
#include "common/data/dataset.h"
#include "common/data/synthetic.h"
#include "common/metrics/metrics.h"
#include "common/status/status.h"
#include "common/tensor/f32.h"
#include "common/tensor/flat.h"
#include "common/torch/model.h"
#include "glog/logging.h"

namespace fedge::cloud::jobs {
namespace {

prometheus::Counter& UpdatesCounter(const std::string& result) {
  return metrics::CounterFamily("fedge_cloud_updates_total",
                                "Client updates received, by result (accepted or rejected).")
      .Add({{"result", result}});
}

prometheus::Counter& RoundsCounter(const std::string& result) {
  return metrics::CounterFamily("fedge_cloud_rounds_total",
                                "Training rounds ended, by result (done, retried, failed).")
      .Add({{"result", result}});
}

prometheus::Counter& UpdateBytesCounter() {
  static auto& c = metrics::CounterFamily("fedge_cloud_update_bytes_total",
                                          "Bytes of accepted client update payloads.")
                       .Add({});
  return c;
}

prometheus::Histogram& RoundSeconds() {
  static auto& h = metrics::HistogramFamily("fedge_cloud_round_duration_seconds",
                                            "Wall time of completed training rounds.")
                       .Add({}, metrics::LatencyBuckets());
  return h;
}

prometheus::Gauge& RunningJobsGauge() {
  static auto& g =
      metrics::GaugeFamily("fedge_cloud_jobs_running", "Training jobs running now.").Add({});
  return g;
}

std::string NewJobId(Clock* clock) {
  static absl::BitGen* gen = new absl::BitGen;
  static Mutex* mu = new Mutex;
  MutexLock lock(mu);
  return absl::StrFormat("job-%s-%04x", absl::FormatTime("%Y%m%d-%H%M%S", clock->Now(),
                                                         absl::UTCTimeZone()),
                         absl::Uniform<uint32_t>(*gen, 0, 0x10000));
}

// Fills defaults and checks every field a person can get wrong.
absl::Status ValidateSpec(v1::JobSpec* spec) {
  if (spec->rounds() == 0) spec->set_rounds(10);
  if (spec->min_clients() == 0) spec->set_min_clients(1);
  if (spec->round_timeout_ms() == 0) spec->set_round_timeout_ms(120000);
  if (spec->wait_for_clients_ms() == 0) spec->set_wait_for_clients_ms(60000);
  if (spec->learning_rate() == 0) spec->set_learning_rate(0.05);
  if (spec->local_epochs() == 0) spec->set_local_epochs(1);
  if (spec->batch_size() == 0) spec->set_batch_size(32);
  if (spec->optimizer().empty()) spec->set_optimizer("sgd");
  if (spec->model().empty()) return absl::InvalidArgumentError("job needs a model name");
  if (spec->rounds() < 0 || spec->rounds() > 10000) {
    return absl::InvalidArgumentError(
        absl::StrCat("rounds is ", spec->rounds(), "; use 1 to 10000"));
  }
  if (spec->clients_per_round() < 0 || spec->min_clients() < 0) {
    return absl::InvalidArgumentError("clients_per_round and min_clients must be >= 0");
  }
  if (spec->clients_per_round() > 0 && spec->min_clients() > spec->clients_per_round()) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_clients (", spec->min_clients(), ") exceeds clients_per_round (",
                     spec->clients_per_round(), ")"));
  }
  if (spec->round_timeout_ms() < 0 || spec->wait_for_clients_ms() < 0 ||
      spec->max_round_retries() < 0) {
    return absl::InvalidArgumentError(
        "round_timeout_ms, wait_for_clients_ms and max_round_retries must be >= 0");
  }
  if (!std::isfinite(spec->learning_rate()) || spec->learning_rate() <= 0 ||
      spec->learning_rate() > 10) {
    return absl::InvalidArgumentError(
        absl::StrCat("learning_rate is ", spec->learning_rate(), "; use a value in (0, 10]"));
  }
  if (spec->local_epochs() < 0 || spec->local_epochs() > 1000) {
    return absl::InvalidArgumentError("local_epochs must be in [1, 1000]");
  }
  if (spec->batch_size() < 0 || spec->batch_size() > 65536) {
    return absl::InvalidArgumentError("batch_size must be in [1, 65536]");
  }
  if (!std::isfinite(spec->proximal_mu()) || spec->proximal_mu() < 0 ||
      spec->proximal_mu() > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("proximal_mu is ", spec->proximal_mu(), "; use a value in [0, 1000]"));
  }
  if (spec->optimizer() != "sgd" && spec->optimizer() != "adam") {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer '", spec->optimizer(), "' is unknown; use sgd or adam"));
  }
  return absl::OkStatus();
}

}  // namespace

struct JobManager::Running {
  std::string id;
  Mutex mu;
  CondVar cv;
  v1::Job job ABSL_GUARDED_BY(mu);
  bool stop ABSL_GUARDED_BY(mu) = false;
  std::string cancelled ABSL_GUARDED_BY(mu);  // non-empty: cancelled, and why

  // The round in progress.
  int round ABSL_GUARDED_BY(mu) = 0;
  bool accepting ABSL_GUARDED_BY(mu) = false;
  std::string schema_hash;  // written before the first round starts, then read-only
  int64_t num_elements = 0;
  std::map<std::string, std::string> tasks ABSL_GUARDED_BY(mu);  // task id -> node id
  std::set<std::string> received ABSL_GUARDED_BY(mu);            // task ids
  std::set<std::string> failed ABSL_GUARDED_BY(mu);              // task ids
  std::unique_ptr<aggregation::Strategy> strategy ABSL_GUARDED_BY(mu);
  int64_t samples ABSL_GUARDED_BY(mu) = 0;
  double weighted_loss ABSL_GUARDED_BY(mu) = 0;
  int64_t bytes_up ABSL_GUARDED_BY(mu) = 0;
  int64_t bytes_down ABSL_GUARDED_BY(mu) = 0;
  std::map<std::string, int64_t> round_samples ABSL_GUARDED_BY(mu);  // node -> samples
};

JobManager::JobManager(Options options) : options_(options) {}

JobManager::~JobManager() { Shutdown(); }

absl::StatusOr<v1::Job> JobManager::Start(v1::JobSpec spec, const std::string& creator) {
  FEDGE_RETURN_IF_ERROR(ValidateSpec(&spec));
  FEDGE_ASSIGN_OR_RETURN(v1::Version base,
                         options_.registry->GetVersion(spec.model(), spec.base_version()));
  spec.set_base_version(base.version());
  // Load the holdout now so that a bad path or file fails the request, not the job later.
  FEDGE_ASSIGN_OR_RETURN(data::Dataset holdout, models::LoadHoldout(spec.holdout(), base.contract()));
  if (holdout.size() > 0 && base.contract().feature_names_size() > 0 &&
      holdout.num_features() != base.contract().feature_names_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "holdout has ", holdout.num_features(), " features; model ", spec.model(), " v",
        base.version(), " takes ", base.contract().feature_names_size()));
  }
  v1::Job job;
  job.set_id(NewJobId(options_.clock));
  while (options_.registry->GetJob(job.id()).ok()) job.set_id(NewJobId(options_.clock));
  *job.mutable_spec() = spec;
  job.set_state(v1::JOB_PENDING);
  job.set_creator(creator);
  const int64_t now = absl::ToUnixMillis(options_.clock->Now());
  job.set_created_unix_ms(now);
  job.set_updated_unix_ms(now);
  FEDGE_RETURN_IF_ERROR(options_.registry->PutJob(job, base.sha256()));
  auto running = std::make_shared<Running>();
  running->id = job.id();
  {
    MutexLock lock(&running->mu);
    running->job = job;
  }
  LOG(INFO) << "job=" << job.id() << " created by " << creator << ": model " << spec.model()
            << " v" << base.version() << ", " << spec.rounds() << " rounds";
  v1::AuditEntry audit;
  audit.set_action("job_start");
  audit.set_principal(creator);
  audit.set_model(spec.model());
  audit.set_version(base.version());
  audit.set_job_id(job.id());
  audit.set_reason(spec.reason());
  FEDGE_RETURN_IF_ERROR(options_.registry->AppendAudit(audit));
  Emit("job.started", job, 0,
       absl::StrCat(spec.rounds(), " rounds of ", spec.model(), " v", base.version()));
  Launch(running);
  return job;
}

void JobManager::Emit(const std::string& type, const v1::Job& job, int round,
                      const std::string& message, int64_t version) const {
  if (options_.events == nullptr) return;
  v1::Event e;
  e.set_type(type);
  e.set_model(job.spec().model());
  e.set_job_id(job.id());
  e.set_round(round);
  e.set_version(version);
  e.set_message(message);
  options_.events->Append(std::move(e));
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& id, const std::string& principal,
                                           const std::string& reason) {
  std::shared_ptr<Running> job = Find(id);
  if (job == nullptr) {
    FEDGE_ASSIGN_OR_RETURN(auto record, options_.registry->GetJob(id));
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", id, " is ", v1::JobState_Name(record.job.state()), ", not running"));
  }
  v1::AuditEntry audit;
  audit.set_action("job_cancel");
  audit.set_principal(principal);
  audit.set_job_id(id);
  audit.set_reason(reason);
  MutexLock lock(&job->mu);
  audit.set_model(job->job.spec().model());
  FEDGE_RETURN_IF_ERROR(options_.registry->AppendAudit(audit));
  job->cancelled = absl::StrCat("cancelled by ", principal, reason.empty() ? "" : ": ", reason);
  job->stop = true;
  job->cv.SignalAll();
  return job->job;
}

absl::StatusOr<v1::Job> JobManager::Get(const std::string& id) const {
  FEDGE_ASSIGN_OR_RETURN(auto record, options_.registry->GetJob(id));
  return record.job;
}

absl::StatusOr<std::vector<v1::Job>> JobManager::List() const {
  FEDGE_ASSIGN_OR_RETURN(auto records, options_.registry->ListJobs());
  std::vector<v1::Job> out;
  for (auto& r : records) out.push_back(std::move(r.job));
  return out;
}

absl::Status JobManager::ResumeUnfinished() {
  FEDGE_ASSIGN_OR_RETURN(auto records, options_.registry->UnfinishedJobs());
  for (auto& record : records) {
    auto running = std::make_shared<Running>();
    running->id = record.job.id();
    {
      MutexLock lock(&running->mu);
      running->job = record.job;
    }
    LOG(INFO) << "job=" << record.job.id() << " resuming after round "
              << record.job.completed_rounds();
    Launch(running);
  }
  return absl::OkStatus();
}

void JobManager::Launch(std::shared_ptr<Running> job) {
  MutexLock lock(&mu_);
  if (shutdown_) return;
  // Reap the threads of jobs that have ended.
  for (auto it = threads_.begin(); it != threads_.end();) {
    if (running_.count(it->first) == 0) {
      it->second.join();
      it = threads_.erase(it);
    } else {
      ++it;
    }
  }
  running_[job->id] = job;
  threads_[job->id] = std::thread([this, job] {
    Run(job);
    MutexLock lock(&mu_);
    running_.erase(job->id);
  });
}

std::shared_ptr<JobManager::Running> JobManager::Find(const std::string& id) const {
  MutexLock lock(&mu_);
  auto it = running_.find(id);
  return it == running_.end() ? nullptr : it->second;
}

void JobManager::Shutdown() {
  std::map<std::string, std::thread> threads;
  {
    MutexLock lock(&mu_);
    shutdown_ = true;
    for (auto& [id, job] : running_) {
      MutexLock job_lock(&job->mu);
      job->stop = true;
      job->cv.SignalAll();
    }
    threads.swap(threads_);
  }
  for (auto& [id, t] : threads) t.join();
}

absl::Status JobManager::CheckUpload(const std::string& node_id,
                                     const v1::UpdateHeader& header) const {
  std::shared_ptr<Running> job = Find(header.job_id());
  if (job == nullptr) {
    auto record = options_.registry->GetJob(header.job_id());
    if (record.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("job '", header.job_id(), "' is ",
                       v1::JobState_Name(record->job.state()), " and takes no more updates"));
    }
    return absl::NotFoundError(absl::StrCat("job '", header.job_id(), "' does not exist"));
  }
  MutexLock lock(&job->mu);
  if (header.round() != job->round || !job->accepting) {
    return absl::FailedPreconditionError(absl::StrCat(
        "update for round ", header.round(), " of job ", job->id, " is stale: the job is ",
        job->accepting ? "in round " : "not accepting updates (round ", job->round,
        job->accepting ? "" : " is closed)"));
  }
  auto task = job->tasks.find(header.task_id());
  if (task == job->tasks.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "task '", header.task_id(), "' is not part of round ", job->round, " of job ", job->id));
  }
  if (task->second != node_id) {
    return absl::PermissionDeniedError(absl::StrCat("task '", header.task_id(),
                                                    "' was assigned to another node, not ",
                                                    node_id));
  }
  if (job->received.count(header.task_id()) > 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("the update for task '", header.task_id(), "' was already received"));
  }
  if (header.schema_hash() != job->schema_hash) {
    return absl::InvalidArgumentError(absl::StrCat(
        "update schema ", header.schema_hash().substr(0, 12), " does not match the round's ",
        job->schema_hash.substr(0, 12), ": the edge trained a different model architecture"));
  }
  if (header.encoding() != v1::F32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "update encoding ", v1::Encoding_Name(header.encoding()), " is not supported; use F32"));
  }
  const int64_t expected = job->num_elements * 4;
  if (header.total_size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("update declares ", header.total_size(),
                                                   " bytes; an F32 update of this model has ",
                                                   expected));
  }
  if (header.num_samples() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("update reports ", header.num_samples(), " samples; it must be positive"));
  }
  return absl::OkStatus();
}

absl::Status JobManager::SubmitUpdate(const std::string& node_id, const v1::UpdateHeader& header,
                                      absl::string_view payload) {
  absl::Status st = CheckUpload(node_id, header);
  std::shared_ptr<Running> job = st.ok() ? Find(header.job_id()) : nullptr;
  if (st.ok() && job == nullptr) {
    // The job ended between the check and now.
    st = absl::FailedPreconditionError(
        absl::StrCat("job '", header.job_id(), "' ended before the update was folded"));
  }
  if (st.ok()) {
    // A view of the staged payload, not a copy: the payload outlives the fold.
    FlatTensor scratch;
    auto delta = ViewF32(payload, job->num_elements, &scratch);
    st = delta.status();
    if (st.ok()) {
      // The schema itself lives in the model; element positions suffice for the message.
      Schema flat_schema{{TensorSpec{"update", {job->num_elements}}}};
      st = CheckFinite(*delta, flat_schema);
    }
    if (st.ok()) {
      const double norm = L2Norm(*delta);
      if (norm > options_.max_update_norm) {
        st = absl::InvalidArgumentError(absl::StrFormat(
            "update norm %.3g exceeds the bound %.3g; the edge's training likely diverged", norm,
            options_.max_update_norm));
      }
    }
    if (st.ok()) {
      MutexLock lock(&job->mu);
      // Re-check under the lock: the round may have closed while the payload was validated.
      if (!job->accepting || header.round() != job->round) {
        st = absl::FailedPreconditionError(absl::StrCat(
            "round ", header.round(), " of job ", job->id, " closed before the update was folded"));
      } else if (job->received.count(header.task_id()) > 0) {
        st = absl::AlreadyExistsError(
            absl::StrCat("the update for task '", header.task_id(), "' was already received"));
      } else {
        st = job->strategy->Fold({*delta, header.num_samples()});
        if (st.ok()) {
          job->received.insert(header.task_id());
          job->failed.erase(header.task_id());
          job->samples += header.num_samples();
          auto loss = header.metrics().find("train_loss");
          if (loss != header.metrics().end()) {
            job->weighted_loss += loss->second * header.num_samples();
          }
          auto down = header.metrics().find("bytes_down");
          if (down != header.metrics().end()) job->bytes_down += static_cast<int64_t>(down->second);
          job->bytes_up += static_cast<int64_t>(payload.size());
          job->round_samples[node_id] += header.num_samples();
          job->cv.SignalAll();
        }
      }
    }
  }
  if (st.ok()) {
    UpdatesCounter("accepted").Increment();
    UpdateBytesCounter().Increment(static_cast<double>(payload.size()));
    LOG(INFO) << "node=" << node_id << " job=" << header.job_id() << " round=" << header.round()
              << " update folded (" << header.num_samples() << " samples)";
  } else {
    UpdatesCounter("rejected").Increment();
    LOG(WARNING) << "node=" << node_id << " job=" << header.job_id()
                 << " round=" << header.round() << " update rejected: " << st;
  }
  return st;
}

void JobManager::OnTaskStatus(const std::string& node_id, const v1::TaskStatus& status) {
  if (status.state() != v1::TASK_FAILED) return;
  MutexLock lock(&mu_);
  for (auto& [id, job] : running_) {
    MutexLock job_lock(&job->mu);
    auto it = job->tasks.find(status.task_id());
    if (it != job->tasks.end() && it->second == node_id &&
        job->received.count(status.task_id()) == 0) {
      LOG(WARNING) << "node=" << node_id << " job=" << id << " round=" << job->round
                   << " task failed: " << status.message();
      job->failed.insert(status.task_id());
      job->cv.SignalAll();
    }
  }
}

void JobManager::Run(std::shared_ptr<Running> rj) {
  registry::Registry* registry = options_.registry;
  Clock* clock = options_.clock;
  v1::Job job;
  {
    MutexLock lock(&rj->mu);
    job = rj->job;
  }
  const v1::JobSpec& spec = job.spec();
  const std::string& id = job.id();
  RunningJobsGauge().Increment();

  // Persists the job with the digest of its current global model.
  auto persist = [&](const std::string& global_sha) {
    job.set_updated_unix_ms(absl::ToUnixMillis(clock->Now()));
    absl::Status st = registry->PutJob(job, global_sha);
    if (!st.ok()) LOG(ERROR) << "job=" << id << " cannot persist state: " << st;
    MutexLock lock(&rj->mu);
    rj->job = job;
    return st;
  };
  auto fail = [&](const std::string& global_sha, const absl::Status& why) {
    job.set_state(v1::JOB_FAILED);
    job.set_error(std::string(why.message()));
    LOG(ERROR) << "job=" << id << " failed: " << why;
    persist(global_sha).IgnoreError();  // logged; the next persist retries
    Emit("job.failed", job, job.completed_rounds(), std::string(why.message()));
    RunningJobsGauge().Decrement();
  };
  auto stopping = [&] {
    MutexLock lock(&rj->mu);
    return rj->stop;
  };

  auto record = registry->GetJob(id);
  if (!record.ok()) {
    LOG(ERROR) << "job=" << id << " cannot be read back: " << record.status();
    RunningJobsGauge().Decrement();
    return;
  }
  std::string global_sha = record->global_sha256;
  auto base = registry->GetVersion(spec.model(), spec.base_version());
  if (!base.ok()) return fail(global_sha, base.status());
  auto archive = registry->ReadBlob(global_sha);
  if (!archive.ok()) return fail(global_sha, archive.status());
  auto model = torchlib::Model::Load(*archive);
  if (!model.ok()) return fail(global_sha, model.status());
  auto holdout = models::LoadHoldout(spec.holdout(), base->contract());
  if (!holdout.ok()) return fail(global_sha, holdout.status());
  rj->schema_hash = (*model)->schema().Hash();
  rj->num_elements = (*model)->schema().NumElements();

  // A round that was in flight when the previous process died is recorded as interrupted.
  for (auto& info : *job.mutable_rounds()) {
    if (info.state() == "training") {
      info.set_state("interrupted");
      info.set_reason("the coordinator restarted during the round");
    }
  }
  if (job.completed_rounds() == 0 && holdout->size() > 0) {
    auto eval = (*model)->Evaluate(*holdout);
    if (eval.ok()) job.set_initial_val_accuracy(eval->accuracy);
  }
  job.set_state(v1::JOB_RUNNING);
  persist(global_sha).IgnoreError();  // logged; the next persist retries

  std::map<std::string, int64_t> participants;  // over the whole job: node -> samples
  for (int round = job.completed_rounds() + 1; round <= spec.rounds(); ++round) {
    bool done = false;
    std::string reason;
    for (int attempt = 1; attempt <= 1 + spec.max_round_retries() && !done; ++attempt) {
      const absl::Time started = clock->Now();
      // 1. Wait for enough eligible nodes.
      std::map<std::string, std::string> selector(spec.selector().begin(), spec.selector().end());
      std::vector<std::string> eligible;
      const absl::Time wait_until = started + absl::Milliseconds(spec.wait_for_clients_ms());
      while (true) {
        eligible = options_.fleet->Eligible(selector, "train");
        if (static_cast<int>(eligible.size()) >= spec.min_clients() || stopping() ||
            clock->Now() >= wait_until) {
          break;
        }
        MutexLock lock(&rj->mu);
        rj->cv.WaitWithTimeout(&rj->mu, absl::Milliseconds(50));
      }
      if (stopping()) break;
      v1::RoundInfo* info = job.add_rounds();
      info->set_round(round);
      info->set_attempt(attempt);
      if (static_cast<int>(eligible.size()) < spec.min_clients()) {
        reason = absl::StrCat("only ", eligible.size(), " eligible node(s) connected after ",
                              spec.wait_for_clients_ms() / 1000.0, " s; the round needs ",
                              spec.min_clients());
        info->set_state(attempt <= spec.max_round_retries() ? "retrying" : "failed");
        info->set_reason(reason);
        LOG(WARNING) << "job=" << id << " round=" << round << " attempt " << attempt << ": "
                     << reason;
        RoundsCounter(attempt <= spec.max_round_retries() ? "retried" : "failed").Increment();
        persist(global_sha).IgnoreError();  // logged; the next persist retries
        continue;
      }
      // 2. Select K (seeded, so a rerun selects the same nodes).
      std::mt19937_64 rng(spec.seed() * 1000003ULL + static_cast<uint64_t>(round) * 7919ULL +
                          static_cast<uint64_t>(attempt));
      std::shuffle(eligible.begin(), eligible.end(), rng);
      if (spec.clients_per_round() > 0 &&
          static_cast<int>(eligible.size()) > spec.clients_per_round()) {
        eligible.resize(static_cast<size_t>(spec.clients_per_round()));
      }
      std::sort(eligible.begin(), eligible.end());
      const FlatTensor base_flat = (*model)->Flat();
      const absl::Time deadline = clock->Now() + absl::Milliseconds(spec.round_timeout_ms());
      std::vector<std::pair<std::string, v1::CloudMessage>> sends;
      {
        MutexLock lock(&rj->mu);
        rj->round = round;
        rj->accepting = true;
        rj->tasks.clear();
        rj->received.clear();
        rj->failed.clear();
        rj->strategy = std::make_unique<aggregation::FedAvg>(rj->num_elements);
        rj->samples = 0;
        rj->weighted_loss = 0;
        rj->bytes_up = 0;
        rj->bytes_down = 0;
        rj->round_samples.clear();
        for (const std::string& node : eligible) {
          v1::CloudMessage msg;
          v1::TrainTask* task = msg.mutable_train_task();
          task->set_task_id(absl::StrCat(id, "-r", round, "-a", attempt, "-", node));
          task->set_job_id(id);
          task->set_round(round);
          task->set_model(spec.model());
          task->set_base_sha256(global_sha);
          task->set_schema_hash(rj->schema_hash);
          task->set_optimizer(spec.optimizer() == "adam" ? v1::ADAM : v1::SGD);
          task->set_learning_rate(spec.learning_rate());
          task->set_epochs(spec.local_epochs());
          task->set_batch_size(spec.batch_size());
          task->set_proximal_mu(spec.proximal_mu());
          task->set_deadline_unix_ms(absl::ToUnixMillis(deadline));
          task->set_seed(spec.seed() * 1000003ULL + static_cast<uint64_t>(round));
          rj->tasks[task->task_id()] = node;
          sends.emplace_back(node, std::move(msg));
        }
      }
      info->set_state("training");
      info->set_participants(static_cast<int32_t>(eligible.size()));
      persist(global_sha).IgnoreError();  // logged; the next persist retries
      LOG(INFO) << "job=" << id << " round=" << round << " started with " << eligible.size()
                << " node(s)";
      for (auto& [node, msg] : sends) {
        if (!options_.fleet->Send(node, msg)) {
          LOG(WARNING) << "job=" << id << " round=" << round << " node=" << node
                       << " went away before its task was sent";
          MutexLock lock(&rj->mu);
          rj->failed.insert(msg.train_task().task_id());
        }
      }
      // 3. Wait for every update, or the deadline.
      absl::StatusOr<FlatTensor> aggregate = absl::UnknownError("");
      int arrived = 0;
      double train_loss = 0;
      int64_t samples = 0, bytes_up = 0, bytes_down = 0;
      std::map<std::string, int64_t> round_samples;
      bool stop = false;
      {
        MutexLock lock(&rj->mu);
        while (!rj->stop && rj->received.size() + rj->failed.size() < rj->tasks.size() &&
               clock->Now() < deadline) {
          rj->cv.WaitWithTimeout(&rj->mu, absl::Milliseconds(50));
        }
        stop = rj->stop;
        rj->accepting = false;
        arrived = rj->strategy->folded();
        if (!stop && arrived >= spec.min_clients()) aggregate = rj->strategy->Finish(base_flat);
        samples = rj->samples;
        train_loss = samples > 0 ? rj->weighted_loss / samples : 0;
        bytes_up = rj->bytes_up;
        bytes_down = rj->bytes_down;
        round_samples = rj->round_samples;
      }
      if (stop) break;
      info->set_samples(samples);
      info->set_train_loss(train_loss);
      info->set_bytes_up(bytes_up);
      info->set_bytes_down(bytes_down);
      info->set_participants(arrived);
      if (arrived < spec.min_clients()) {
        reason = absl::StrCat("only ", arrived, " of the minimum ", spec.min_clients(),
                              " update(s) arrived by the deadline (",
                              spec.round_timeout_ms() / 1000.0, " s)");
      } else if (!aggregate.ok()) {
        reason = std::string(aggregate.status().message());
      } else {
        // 4. The new global model: write its archive, score it, persist the round.
        absl::Status st = (*model)->SetFlat(*aggregate);
        absl::StatusOr<std::string> bytes =
            st.ok() ? (*model)->Serialize() : absl::StatusOr<std::string>(st);
        absl::StatusOr<std::string> sha =
            bytes.ok() ? registry->PutBlob(*bytes) : absl::StatusOr<std::string>(bytes.status());
        if (!sha.ok()) return fail(global_sha, sha.status());
        if (holdout->size() > 0) {
          auto eval = (*model)->Evaluate(*holdout);
          if (eval.ok()) {
            info->set_val_accuracy(eval->accuracy);
            info->set_val_loss(eval->loss);
          } else {
            LOG(WARNING) << "job=" << id << " round=" << round << " evaluation failed: "
                         << eval.status();
          }
        }
        info->set_state("done");
        info->set_seconds(absl::ToDoubleSeconds(clock->Now() - started));
        job.set_completed_rounds(round);
        global_sha = *sha;
        for (const auto& [node, n] : round_samples) participants[node] += n;
        if (!persist(global_sha).ok()) {
          return fail(record->global_sha256, absl::InternalError("cannot persist the round"));
        }
        RoundsCounter("done").Increment();
        RoundSeconds().Observe(info->seconds());
        Emit("round.completed", job, round,
             absl::StrFormat("%d update(s), %d samples, val_accuracy %.4f", arrived, samples,
                             info->val_accuracy()));
        LOG(INFO) << "job=" << id << " round=" << round << " done: " << arrived
                  << " update(s), " << samples << " samples, train_loss=" << train_loss
                  << " val_accuracy=" << info->val_accuracy();
        done = true;
        break;
      }
      info->set_state(attempt <= spec.max_round_retries() ? "retrying" : "failed");
      info->set_reason(reason);
      info->set_seconds(absl::ToDoubleSeconds(clock->Now() - started));
      RoundsCounter(attempt <= spec.max_round_retries() ? "retried" : "failed").Increment();
      LOG(WARNING) << "job=" << id << " round=" << round << " attempt " << attempt << ": "
                   << reason;
      persist(global_sha).IgnoreError();  // logged; the next persist retries
    }
    if (stopping()) {
      std::string cancelled;
      {
        MutexLock lock(&rj->mu);
        cancelled = rj->cancelled;
      }
      if (!cancelled.empty()) {
        job.set_state(v1::JOB_CANCELLED);
        job.set_error(cancelled);
        persist(global_sha).IgnoreError();  // logged
        Emit("job.cancelled", job, job.completed_rounds(), cancelled);
        LOG(INFO) << "job=" << id << " " << cancelled;
      } else {
        LOG(INFO) << "job=" << id << " paused at shutdown after round " << job.completed_rounds();
      }
      RunningJobsGauge().Decrement();
      return;
    }
    if (!done) {
      return fail(global_sha, absl::DeadlineExceededError(absl::StrCat(
                                  "round ", round, " failed after ", 1 + spec.max_round_retries(),
                                  " attempt(s): ", reason)));
    }
  }

  // 5. Register the result as a new version.
  v1::Version version;
  version.set_model(spec.model());
  version.set_parent_version(base->version());
  version.set_sha256(global_sha);
  version.set_schema_hash(rj->schema_hash);
  version.set_job_id(id);
  version.set_round(job.completed_rounds());
  version.set_creator(job.creator());
  version.set_reason(spec.reason().empty() ? absl::StrCat("federated training job ", id)
                                           : spec.reason());
  version.set_strategy(spec.proximal_mu() > 0
                           ? absl::StrCat("fedprox(mu=", spec.proximal_mu(), ")")
                           : std::string("fedavg"));
  *version.mutable_contract() = base->contract();
  *version.mutable_schema() = (*model)->schema().ToProto();
  for (const auto& [node, n] : participants) {
    auto* p = version.add_participants();
    p->set_node_id(node);
    p->set_num_samples(n);
  }
  if (job.rounds_size() > 0) {
    const v1::RoundInfo& last = job.rounds(job.rounds_size() - 1);
    (*version.mutable_metrics())["val_accuracy"] = last.val_accuracy();
    (*version.mutable_metrics())["val_loss"] = last.val_loss();
    (*version.mutable_metrics())["train_loss"] = last.train_loss();
  }
  job.set_state(v1::JOB_SUCCEEDED);
  job.set_updated_unix_ms(absl::ToUnixMillis(clock->Now()));
  auto registered = registry->FinishJob(job, version);
  if (!registered.ok()) return fail(global_sha, registered.status());
  {
    MutexLock lock(&rj->mu);
    rj->job = job;
    rj->job.set_result_version(registered->version());
  }
  LOG(INFO) << "job=" << id << " succeeded: registered " << spec.model() << " v"
            << registered->version();
  Emit("version.registered", job, job.completed_rounds(),
       absl::StrCat(spec.model(), " v", registered->version(), " from job ", id),
       registered->version());
  Emit("job.completed", job, job.completed_rounds(),
       absl::StrCat("registered ", spec.model(), " v", registered->version()),
       registered->version());
  RunningJobsGauge().Decrement();
  if (options_.on_registered) options_.on_registered(*registered);
}

}  // namespace fedge::cloud::jobs
