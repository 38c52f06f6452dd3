#include "cloud/jobs/job_manager.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cloud/aggregation/strategy.h"
#include "cloud/events/event_log.h"
#include "cloud/models/validator.h"
#include "common/codec/codec.h"
#include "common/data/dataset.h"
#include "common/data/synthetic.h"
#include "common/metrics/metrics.h"
#include "common/status/quote.h"
#include "common/status/status.h"
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

prometheus::Counter& UpdateBytesCounter(codec::Encoding encoding) {
  return metrics::CounterFamily("fedge_cloud_update_bytes_total",
                                "Bytes of accepted client update payloads, by encoding.")
      .Add({{"encoding", std::string(codec::EncodingName(encoding))}});
}

// Updates stopped or changed by the coordinator's checks before they reach the aggregate.
prometheus::Counter& PoisonedCounter(const std::string& reason, const std::string& action) {
  return metrics::CounterFamily(
             "fedge_cloud_poisoned_updates_total",
             "Updates that failed the coordinator's value checks, by reason (non_finite, norm, "
             "num_samples) and action (refused, clipped to the job's norm bound or to the "
             "node's reported samples).")
      .Add({{"reason", reason}, {"action", action}});
}

prometheus::Counter& JobsStartedCounter() {
  static auto& c =
      metrics::CounterFamily("fedge_cloud_jobs_started_total", "Training jobs created.").Add({});
  return c;
}

prometheus::Counter& JobsFinishedCounter(const std::string& state) {
  return metrics::CounterFamily("fedge_cloud_jobs_finished_total",
                                "Training jobs ended, by state (succeeded, failed, cancelled).")
      .Add({{"state", state}});
}

prometheus::Counter& RoundsStartedCounter() {
  static auto& c = metrics::CounterFamily("fedge_cloud_rounds_started_total",
                                          "Training rounds started (async: aggregation steps).")
                       .Add({});
  return c;
}

prometheus::Histogram& AggregationSeconds() {
  static auto& h =
      metrics::HistogramFamily("fedge_cloud_aggregation_duration_seconds",
                               "Time to finish a round's aggregate: the rule's result and the "
                               "server optimizer's step, after the last update was folded.")
          .Add({}, metrics::LatencyBuckets());
  return h;
}

prometheus::Gauge& ParticipantsGauge() {
  static auto& g = metrics::GaugeFamily("fedge_cloud_round_participants",
                                        "Updates folded into the last completed round.")
                       .Add({});
  return g;
}

prometheus::Counter& RoundBytesCounter(const std::string& direction) {
  return metrics::CounterFamily(
             "fedge_cloud_round_bytes_total",
             "Update bytes of completed rounds, by direction: up (edges' uploads) and down (the "
             "models the edges downloaded for them).")
      .Add({{"direction", direction}});
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

// Creates every series with a known label value, so that rates and alerts see a zero from
// the first scrape instead of no data.
void RegisterJobMetrics() {
  for (const char* r : {"accepted", "rejected"}) UpdatesCounter(r);
  for (const char* r : {"done", "retried", "failed"}) RoundsCounter(r);
  for (const char* d : {"up", "down"}) RoundBytesCounter(d);
  for (const char* s : {"succeeded", "failed", "cancelled"}) JobsFinishedCounter(s);
  for (codec::Encoding e : {codec::Encoding::kF32, codec::Encoding::kF16, codec::Encoding::kInt8,
                            codec::Encoding::kTopK, codec::Encoding::kTopKInt8}) {
    UpdateBytesCounter(e);
  }
  JobsStartedCounter();
  RoundsStartedCounter();
  PoisonedCounter("non_finite", "refused");
  PoisonedCounter("norm", "refused");
  PoisonedCounter("num_samples", "refused");
  PoisonedCounter("num_samples", "clipped");
  PoisonedCounter("norm", "clipped");
  AggregationSeconds();
  ParticipantsGauge();
  RoundSeconds();
  RunningJobsGauge();
}

std::string NewJobId(Clock* clock) {
  static absl::BitGen* gen = new absl::BitGen;
  static Mutex* mu = new Mutex;
  MutexLock lock(mu);
  return absl::StrFormat("job-%s-%04x",
                         absl::FormatTime("%Y%m%d-%H%M%S", clock->Now(), absl::UTCTimeZone()),
                         absl::Uniform<uint32_t>(*gen, 0, 0x10000));
}

// Fills the aggregation defaults; the strategy itself checks the values.
absl::Status FillAggregation(v1::AggregationSpec* a) {
  if (a->rule().empty()) a->set_rule("fedavg");
  if (a->trim_fraction() == 0 && a->rule() == "trimmed_mean") a->set_trim_fraction(0.1);
  if (a->server_optimizer().empty()) a->set_server_optimizer("none");
  if (a->server_optimizer() != "none") {
    const aggregation::AdaptiveOptions defaults;
    if (a->server_lr() == 0) a->set_server_lr(defaults.server_lr);
    if (a->beta1() == 0) a->set_beta1(defaults.beta1);
    if (a->beta2() == 0) a->set_beta2(defaults.beta2);
    if (a->tau() == 0) a->set_tau(defaults.tau);
  }
  if (a->byzantine() < 0 || a->multi_krum() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("aggregation.byzantine (", a->byzantine(),
                                                   ") and aggregation.multi_krum (",
                                                   a->multi_krum(), ") must be >= 0"));
  }
  if (!std::isfinite(a->clip_norm()) || a->clip_norm() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("aggregation.clip_norm is ", a->clip_norm(),
                                                   "; use a positive norm, or 0 for none"));
  }
  if (!std::isfinite(a->max_update_norm()) || a->max_update_norm() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("aggregation.max_update_norm is ", a->max_update_norm(),
                     "; use a positive norm, or 0 for the coordinator's --max_update_norm"));
  }
  if (a->over_norm().empty()) a->set_over_norm("reject");
  if (a->over_norm() != "reject" && a->over_norm() != "clip") {
    return absl::InvalidArgumentError(absl::StrCat("aggregation.over_norm is \"", a->over_norm(),
                                                   "\"; use \"reject\" or \"clip\""));
  }
  return absl::OkStatus();
}

aggregation::StrategyConfig StrategyConfigOf(const v1::JobSpec& spec) {
  const v1::AggregationSpec& a = spec.aggregation();
  aggregation::StrategyConfig c;
  c.rule = a.rule().empty() ? "fedavg" : a.rule();
  c.params.trim_fraction = a.trim_fraction();
  c.params.byzantine = a.byzantine();
  c.params.multi_krum = a.multi_krum();
  c.params.clip_norm = a.clip_norm();
  c.server_optimizer = a.server_optimizer().empty() ? "none" : a.server_optimizer();
  if (a.server_lr() > 0) c.server.server_lr = a.server_lr();
  c.server.beta1 = a.beta1();
  c.server.beta2 = a.beta2();
  c.server.tau = a.tau();
  if (c.server_optimizer == "none") c.server = {};
  c.proximal_mu = spec.proximal_mu();
  return c;
}

absl::Status FillCompression(v1::CompressionSpec* c) {
  if (c->encoding().empty()) c->set_encoding("f32");
  auto encoding = codec::ParseEncoding(c->encoding());
  if (!encoding.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("compression.encoding: ", encoding.status().message()));
  }
  const codec::CodecParams defaults;
  if (c->topk_fraction() == 0) c->set_topk_fraction(defaults.topk_fraction);
  if (c->block_size() == 0) c->set_block_size(defaults.block_size);
  codec::CodecParams params;
  params.encoding = *encoding;
  params.topk_fraction = c->topk_fraction();
  params.block_size = c->block_size();
  absl::Status st = codec::ValidateParams(params);
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("compression: ", st.message()));
  return absl::OkStatus();
}

// The job's encoding; the spec passed FillCompression when the job started.
codec::CodecParams CodecParamsOf(const v1::JobSpec& spec) {
  codec::CodecParams params;
  auto encoding = codec::ParseEncoding(spec.compression().encoding());
  if (encoding.ok()) params.encoding = *encoding;
  if (spec.compression().topk_fraction() > 0) {
    params.topk_fraction = spec.compression().topk_fraction();
  }
  if (spec.compression().block_size() > 0) params.block_size = spec.compression().block_size();
  return params;
}

// Names where a flat index falls: "tensor 'fc1.weight' at element 12".
std::string Locate(const Schema& schema, int64_t index) {
  int64_t offset = 0;
  for (const auto& t : schema.tensors) {
    if (index < offset + t.NumElements()) {
      return absl::StrCat("tensor '", t.name, "' at element ", index - offset);
    }
    offset += t.NumElements();
  }
  return absl::StrCat("element ", index);
}

absl::Status ValidateSelection(v1::JobSpec* spec) {
  const v1::SelectionSpec& sel = spec->selection();
  if (!std::isfinite(sel.fraction()) || sel.fraction() < 0 || sel.fraction() > 1) {
    return absl::InvalidArgumentError(absl::StrCat("selection.fraction is ", sel.fraction(),
                                                   "; use a share in (0, 1], or 0 for none"));
  }
  if (sel.min_cpu_cores() < 0 || sel.min_memory_mb() < 0) {
    return absl::InvalidArgumentError("selection.min_cpu_cores and min_memory_mb must be >= 0");
  }
  if (!std::isfinite(sel.over_selection()) || sel.over_selection() < 0 ||
      sel.over_selection() > 10) {
    return absl::InvalidArgumentError(absl::StrCat(
        "selection.over_selection is ", sel.over_selection(), "; use a value in [0, 10]"));
  }
  if (!sel.cohort().empty()) {
    auto it = spec->selector().find("cohort");
    if (it != spec->selector().end() && it->second != sel.cohort()) {
      return absl::InvalidArgumentError(
          absl::StrCat("selection.cohort is '", sel.cohort(),
                       "' but the selector asks for cohort=", it->second, "; give one of them"));
    }
    (*spec->mutable_selector())["cohort"] = sel.cohort();
  }
  return absl::OkStatus();
}

absl::Status ValidateAsync(v1::JobSpec* spec) {
  v1::AsyncSpec* a = spec->mutable_async();
  if (!a->enabled()) return absl::OkStatus();
  if (a->buffer_size() == 0) a->set_buffer_size(10);
  if (a->staleness_exponent() == 0) a->set_staleness_exponent(0.5);
  if (a->max_staleness() == 0) a->set_max_staleness(20);
  if (a->buffer_size() < 1 || a->buffer_size() > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("async.buffer_size is ", a->buffer_size(), "; use 1 to 100000"));
  }
  if (a->concurrency() < 0 || a->max_staleness() < 0) {
    return absl::InvalidArgumentError("async.concurrency and async.max_staleness must be >= 0");
  }
  if (!std::isfinite(a->staleness_exponent()) || a->staleness_exponent() < 0 ||
      a->staleness_exponent() > 10) {
    return absl::InvalidArgumentError(absl::StrCat(
        "async.staleness_exponent is ", a->staleness_exponent(), "; use a value in [0, 10]"));
  }
  const std::string& rule = spec->aggregation().rule();
  if (rule != "fedavg" && rule != "mean") {
    return absl::InvalidArgumentError(
        absl::StrCat("async jobs aggregate with the weighted mean; aggregation.rule '", rule,
                     "' needs synchronous rounds"));
  }
  return absl::OkStatus();
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
  if (!spec->has_momentum()) spec->set_momentum(0.9);
  if (spec->model().empty()) return absl::InvalidArgumentError("job needs a model name");
  if (spec->rounds() < 0 || spec->rounds() > 10000) {
    return absl::InvalidArgumentError(
        absl::StrCat("rounds is ", spec->rounds(), "; use 1 to 10000"));
  }
  if (spec->clients_per_round() < 0 || spec->min_clients() < 0) {
    return absl::InvalidArgumentError("clients_per_round and min_clients must be >= 0");
  }
  if (spec->clients_per_round() > 0 && spec->min_clients() > spec->clients_per_round()) {
    return absl::InvalidArgumentError(absl::StrCat("min_clients (", spec->min_clients(),
                                                   ") exceeds clients_per_round (",
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
  if (!(spec->momentum() >= 0 && spec->momentum() < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "momentum is ", spec->momentum(), "; use a value in [0, 1) (0: plain SGD, --momentum)"));
  }
  if (spec->optimizer() != "sgd" && spec->optimizer() != "adam") {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer '", spec->optimizer(), "' is unknown; use sgd or adam"));
  }
  FEDGE_RETURN_IF_ERROR(FillAggregation(spec->mutable_aggregation()));
  // The strategy checks its own names and parameters.
  FEDGE_RETURN_IF_ERROR(aggregation::Strategy::Create(StrategyConfigOf(*spec), 0).status());
  FEDGE_RETURN_IF_ERROR(ValidateSelection(spec));
  FEDGE_RETURN_IF_ERROR(FillCompression(spec->mutable_compression()));
  return ValidateAsync(spec);
}

}  // namespace

struct JobManager::Running {
  std::string id;
  Mutex mu;
  CondVar cv;
  v1::Job job ABSL_GUARDED_BY(mu);
  bool stop ABSL_GUARDED_BY(mu) = false;
  std::string cancelled ABSL_GUARDED_BY(mu);  // non-empty: cancelled, and why

  // Written before the first round starts, then read-only.
  std::string schema_hash;
  Schema schema;
  int64_t num_elements = 0;
  codec::CodecParams codec;
  int local_epochs = 1;
  bool accept_partial = false;
  bool async = false;
  double staleness_exponent = 0;
  int max_staleness = 0;
  double max_norm = 0;  // the job's bound; 0: the coordinator's
  bool clip_over_norm = false;
  int64_t max_samples = 0;  // the coordinator's bound on num_samples

  // The round in progress (async: the server step being formed).
  int round ABSL_GUARDED_BY(mu) = 0;
  bool accepting ABSL_GUARDED_BY(mu) = false;
  // Task id -> node: the round's tasks (async: the tasks still out).
  std::map<std::string, std::string> tasks ABSL_GUARDED_BY(mu);
  // Task id -> what happened to it when not folded ("refused: ...", "failed: ..."), for the
  // round's outcomes and its failure reason.
  std::map<std::string, std::string> why ABSL_GUARDED_BY(mu);
  // Task id -> the local samples its node reported when the task was given (0: unknown): the
  // most its update weighs.
  std::map<std::string, int64_t> sample_caps ABSL_GUARDED_BY(mu);
  std::set<std::string> received ABSL_GUARDED_BY(mu);  // task ids (async: over the whole job)
  std::set<std::string> failed ABSL_GUARDED_BY(mu);    // task ids
  std::set<std::string> dropped ABSL_GUARDED_BY(mu);   // task ids refused: partial or stale
  int target ABSL_GUARDED_BY(mu) = 0;  // over-selection: close the round at this many updates
  int partial ABSL_GUARDED_BY(mu) = 0;
  std::unique_ptr<aggregation::Strategy> strategy ABSL_GUARDED_BY(mu);
  int64_t samples ABSL_GUARDED_BY(mu) = 0;
  double weighted_loss ABSL_GUARDED_BY(mu) = 0;
  int64_t bytes_up ABSL_GUARDED_BY(mu) = 0;
  int64_t bytes_down ABSL_GUARDED_BY(mu) = 0;
  std::map<std::string, int64_t> round_samples ABSL_GUARDED_BY(mu);  // node -> samples

  // JobManager::CheckUpload's checks, with mu held. Records a refused partial or stale
  // update's task in `dropped`.
  absl::Status CheckUploadLocked(const std::string& node_id, const v1::UpdateHeader& header)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  // Closes the round's totals into `info` and returns the nodes' samples.
  std::map<std::string, int64_t> TakeRoundTotals(v1::RoundInfo* info)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    info->set_participants(strategy->folded());
    info->set_samples(samples);
    info->set_train_loss(samples > 0 ? weighted_loss / static_cast<double>(samples) : 0);
    info->set_bytes_up(bytes_up);
    info->set_bytes_down(bytes_down);
    info->set_partial(partial);
    info->set_dropped(static_cast<int32_t>(dropped.size()));
    return round_samples;
  }

  // Starts a round's bookkeeping (not the task lists, which sync and async keep differently).
  // What each node of the round's tasks did, into info->outcomes, in node order. `timed_out`:
  // the round waited its whole timeout.
  void RecordOutcomes(bool timed_out, int64_t timeout_ms, v1::RoundInfo* info)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::map<std::string, v1::NodeOutcome> by_node;
    for (const auto& [task, node] : tasks) {
      v1::NodeOutcome& o = by_node[node];
      o.set_node_id(node);
      if (received.count(task) > 0) {
        o.set_outcome("folded");
        continue;
      }
      auto w = why.find(task);
      if (w != why.end()) {
        const size_t colon = w->second.find(':');
        o.set_outcome(w->second.substr(0, colon));
        o.set_reason(colon == std::string::npos ? w->second : w->second.substr(colon + 2));
      } else if (dropped.count(task) > 0) {
        o.set_outcome("dropped");
        o.set_reason("its update was partial (selection.accept_partial_work is off) or stale");
      } else {
        o.set_outcome("late");
        o.set_reason(timed_out
                         ? absl::StrCat("no update within the round's ", timeout_ms / 1000.0, " s")
                         : "no update yet when the round closed");
      }
    }
    for (auto& [node, o] : by_node) *info->add_outcomes() = std::move(o);
  }

  void ResetRoundTotals() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    strategy->BeginRound();
    partial = 0;
    dropped.clear();
    samples = 0;
    weighted_loss = 0;
    bytes_up = 0;
    bytes_down = 0;
    round_samples.clear();
  }
};

// What one job's thread works with while it runs.
struct JobManager::Context {
  std::shared_ptr<Running> rj;
  v1::Job job;
  std::string global_sha;
  std::unique_ptr<torchlib::Model> model;
  data::Dataset holdout;
  v1::ModelContract contract;  // the base version's: says how the model is scored
  fleet::NodeFilter filter;
  // Every node that took part in the job -> the samples its update weighed in the last round
  // it took part in (its data, not a sum over rounds).
  std::map<std::string, int64_t> participants;
  std::function<absl::Status()> persist;          // the job, with global_sha
  std::function<void(const absl::Status&)> fail;  // ends the job JOB_FAILED
};

JobManager::JobManager(Options options) : options_(options) { RegisterJobMetrics(); }

JobManager::~JobManager() { Shutdown(); }

absl::StatusOr<v1::Job> JobManager::Start(v1::JobSpec spec, const std::string& creator) {
  FEDGE_RETURN_IF_ERROR(ValidateSpec(&spec));
  FEDGE_ASSIGN_OR_RETURN(v1::Version base,
                         options_.registry->GetVersion(spec.model(), spec.base_version()));
  spec.set_base_version(base.version());
  // Load the holdout now so that a bad path or file fails the request, not the job later.
  FEDGE_ASSIGN_OR_RETURN(data::Dataset holdout,
                         models::LoadHoldout(spec.holdout(), base.contract()));
  if (holdout.size() > 0 && base.contract().feature_names_size() > 0 &&
      holdout.num_features() != base.contract().feature_names_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("holdout has ", holdout.num_features(), " features; model ", spec.model(),
                     " v", base.version(), " takes ", base.contract().feature_names_size()));
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
  LOG(INFO) << "job=" << job.id() << " created by " << creator << ": model " << spec.model() << " v"
            << base.version() << ", " << spec.rounds() << " rounds";
  v1::AuditEntry audit;
  audit.set_action("job_start");
  audit.set_principal(creator);
  audit.set_model(spec.model());
  audit.set_version(base.version());
  audit.set_job_id(job.id());
  audit.set_reason(spec.reason());
  FEDGE_RETURN_IF_ERROR(options_.registry->AppendAudit(audit));
  JobsStartedCounter().Increment();
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
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " is ", v1::JobState_Name(record.job.state()), ", not running"));
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
      return absl::FailedPreconditionError(absl::StrCat("job ", Quote(header.job_id()), " is ",
                                                        v1::JobState_Name(record->job.state()),
                                                        " and takes no more updates"));
    }
    return absl::NotFoundError(absl::StrCat("job ", Quote(header.job_id()), " does not exist"));
  }
  MutexLock lock(&job->mu);
  return job->CheckUploadLocked(node_id, header);
}

absl::Status JobManager::Running::CheckUploadLocked(const std::string& node_id,
                                                    const v1::UpdateHeader& header) {
  if (async) {
    if (!accepting) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, " is not accepting updates now"));
    }
    if (header.round() > round || header.round() < 1) {
      return absl::FailedPreconditionError(absl::StrCat("update for step ", header.round(),
                                                        " of job ", id,
                                                        " does not match a task: the "
                                                        "job is forming step ",
                                                        round));
    }
    const int staleness = round - header.round();
    if (staleness > max_staleness) {
      if (tasks.erase(header.task_id()) > 0) dropped.insert(header.task_id());
      return absl::FailedPreconditionError(absl::StrCat("update is ", staleness,
                                                        " server steps stale; job ", id,
                                                        " takes at most ", max_staleness));
    }
  } else if (header.round() != round || !accepting) {
    return absl::FailedPreconditionError(
        absl::StrCat("update for round ", header.round(), " of job ", id, " is stale: the job is ",
                     accepting ? "in round " : "not accepting updates (round ", round,
                     accepting ? "" : " is closed)"));
  }
  auto task = tasks.find(header.task_id());
  if (task == tasks.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "task ", Quote(header.task_id()), " is not part of round ", round, " of job ", id));
  }
  if (task->second != node_id) {
    return absl::PermissionDeniedError(
        absl::StrCat("task '", header.task_id(), "' was assigned to another node, not ", node_id));
  }
  if (received.count(header.task_id()) > 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("the update for task '", header.task_id(), "' was already received"));
  }
  if (header.schema_hash() != schema_hash) {
    return absl::InvalidArgumentError(absl::StrCat(
        "update schema ", header.schema_hash().substr(0, 12), " does not match the round's ",
        schema_hash.substr(0, 12), ": the edge trained a different model architecture"));
  }
  const int wire = header.encoding();
  if (wire != static_cast<int>(codec.encoding)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "update is encoded ", v1::Encoding_IsValid(wire) ? v1::Encoding_Name(wire) : "unknown",
        " (", wire, "); job ", id, " asked for ", codec::EncodingName(codec.encoding)));
  }
  auto expected = codec::EncodedSize(codec, num_elements);
  if (expected.ok() && header.total_size() != *expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("update declares ", header.total_size(), " bytes; a ",
                     codec::EncodingName(codec.encoding), " update of this model has ", *expected));
  }
  if (header.num_samples() <= 0 || header.num_samples() > max_samples) {
    PoisonedCounter("num_samples", "refused").Increment();
    return absl::InvalidArgumentError(absl::StrCat("update reports ", header.num_samples(),
                                                   " samples; it must be from 1 to ", max_samples,
                                                   " (--max_update_samples)"));
  }
  auto epochs = header.metrics().find("epochs");
  if (epochs != header.metrics().end() && epochs->second < local_epochs && !accept_partial) {
    dropped.insert(header.task_id());
    if (async) tasks.erase(header.task_id());
    return absl::FailedPreconditionError(
        absl::StrCat("the update ran ", epochs->second, " of ", local_epochs, " local epochs; job ",
                     id, " does not accept partial work (selection.accept_partial_work)"));
  }
  if (!async && target > 0 && static_cast<int>(received.size()) >= target) {
    return absl::FailedPreconditionError(
        absl::StrCat("round ", round, " of job ", id, " already has its ", target, " update(s)"));
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
  // True while a refusal is about the update itself (its values, norm or encoding), not about
  // the round: the round's outcomes name it. The task stays open (a node may send a better
  // update); an edge reports the task failed after such a refusal, which closes it.
  bool judged = st.ok();
  if (st.ok()) {
    // One streaming pass checks the values and the norm; the fold decodes again, block by
    // block, into the aggregate, so no second full-size copy of the update is made.
    auto stats = codec::Inspect(payload, job->codec, job->num_elements);
    st = stats.status();
    if (st.ok() && !stats->all_finite) {
      PoisonedCounter("non_finite", "refused").Increment();
      st = absl::InvalidArgumentError(absl::StrCat("update holds a non-finite value at ",
                                                   Locate(job->schema, stats->first_non_finite),
                                                   "; the edge's training diverged"));
    }
    const double bound = job->max_norm > 0 ? job->max_norm : options_.max_update_norm;
    double clip = 1.0;  // scales an update clipped to the bound
    if (st.ok() && stats->l2_norm > bound) {
      if (job->clip_over_norm) {
        PoisonedCounter("norm", "clipped").Increment();
        clip = bound / stats->l2_norm;
        LOG(WARNING) << "node=" << node_id << " job=" << header.job_id() << " update norm "
                     << stats->l2_norm << " clipped to the bound " << bound;
      } else {
        PoisonedCounter("norm", "refused").Increment();
        st = absl::InvalidArgumentError(absl::StrFormat(
            "update norm %.3g exceeds the bound %.3g; the edge's training likely diverged",
            stats->l2_norm, bound));
      }
    }
    if (st.ok()) {
      MutexLock lock(&job->mu);
      // Re-check under the lock: the round may have closed (or, async, the step moved on)
      // while the payload was validated.
      st = job->CheckUploadLocked(node_id, header);
      judged = st.ok();
      if (st.ok()) {
        const double scale = job->async ? aggregation::StalenessScale(job->round - header.round(),
                                                                      job->staleness_exponent)
                                        : 1.0;
        // What the update weighs: its claim, but no more than its node reported having when
        // the task was given, with room for the data that arrived since (a quarter more).
        int64_t weight = header.num_samples();
        auto reported = job->sample_caps.find(header.task_id());
        if (reported != job->sample_caps.end() && reported->second > 0) {
          const int64_t cap = reported->second + reported->second / 4;
          if (weight > cap) {
            PoisonedCounter("num_samples", "clipped").Increment();
            LOG(WARNING) << "node=" << node_id << " job=" << header.job_id() << " update claims "
                         << weight << " samples but the node reported " << reported->second
                         << " when its task was given; it weighs " << cap;
            weight = cap;
          }
        }
        st = job->strategy->FoldEncoded(payload, job->codec, weight, scale * clip);
        if (st.ok()) {
          job->received.insert(header.task_id());
          job->failed.erase(header.task_id());
          if (job->async) job->tasks.erase(header.task_id());
          auto epochs = header.metrics().find("epochs");
          if (epochs != header.metrics().end() && epochs->second < job->local_epochs) {
            ++job->partial;
          }
          job->samples += weight;
          auto loss = header.metrics().find("train_loss");
          if (loss != header.metrics().end() && std::isfinite(loss->second)) {
            job->weighted_loss += loss->second * static_cast<double>(weight);
          }
          auto down = header.metrics().find("bytes_down");
          if (down != header.metrics().end()) job->bytes_down += static_cast<int64_t>(down->second);
          job->bytes_up += static_cast<int64_t>(payload.size());
          job->round_samples[node_id] += weight;
          job->cv.SignalAll();
        }
      }
    }
  }
  if (st.ok()) {
    UpdatesCounter("accepted").Increment();
    UpdateBytesCounter(job->codec.encoding).Increment(static_cast<double>(payload.size()));
    LOG(INFO) << "node=" << node_id << " job=" << header.job_id() << " round=" << header.round()
              << " update folded (" << header.num_samples() << " samples)";
  } else {
    UpdatesCounter("rejected").Increment();
    LOG(WARNING) << "node=" << node_id << " job=" << header.job_id() << " round=" << header.round()
                 << " update rejected: " << st;
    if (judged && job != nullptr) {
      MutexLock lock(&job->mu);
      if (!job->async && job->round == header.round() &&
          job->received.count(header.task_id()) == 0) {
        job->why[header.task_id()] = absl::StrCat("refused: ", st.message());
      }
    }
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
                   << " task failed: " << Quote(status.message(), 512);
      job->failed.insert(status.task_id());
      // A refusal the coordinator recorded says more than the node's echo of it.
      job->why.emplace(status.task_id(),
                       absl::StrCat("failed: ", absl::CHexEscape(status.message().substr(0, 300))));
      if (job->async) job->tasks.erase(it);  // the node is free for another task
      job->cv.SignalAll();
    }
  }
}

void JobManager::Run(std::shared_ptr<Running> rj) {
  registry::Registry* registry = options_.registry;
  Clock* clock = options_.clock;
  Context ctx;
  ctx.rj = rj;
  {
    MutexLock lock(&rj->mu);
    ctx.job = rj->job;
  }
  const v1::JobSpec spec = ctx.job.spec();
  const std::string id = ctx.job.id();
  RunningJobsGauge().Increment();

  ctx.persist = [&] {
    ctx.job.set_updated_unix_ms(absl::ToUnixMillis(clock->Now()));
    absl::Status st = registry->PutJob(ctx.job, ctx.global_sha);
    if (!st.ok()) LOG(ERROR) << "job=" << id << " cannot persist state: " << st;
    MutexLock lock(&rj->mu);
    rj->job = ctx.job;
    return st;
  };
  ctx.fail = [&](const absl::Status& why) {
    ctx.job.set_state(v1::JOB_FAILED);
    ctx.job.set_error(std::string(why.message()));
    LOG(ERROR) << "job=" << id << " failed: " << why;
    ctx.persist().IgnoreError();  // logged; the next persist retries
    Emit("job.failed", ctx.job, ctx.job.completed_rounds(), std::string(why.message()));
    JobsFinishedCounter("failed").Increment();
    RunningJobsGauge().Decrement();
  };

  auto record = registry->GetJob(id);
  if (!record.ok()) {
    LOG(ERROR) << "job=" << id << " cannot be read back: " << record.status();
    RunningJobsGauge().Decrement();
    return;
  }
  ctx.global_sha = record->global_sha256;
  auto base = registry->GetVersion(spec.model(), spec.base_version());
  if (!base.ok()) return ctx.fail(base.status());
  auto archive = registry->ReadBlob(ctx.global_sha);
  if (!archive.ok()) return ctx.fail(archive.status());
  auto model = torchlib::Model::Load(*archive);
  if (!model.ok()) return ctx.fail(model.status());
  ctx.model = std::move(*model);
  auto holdout = models::LoadHoldout(spec.holdout(), base->contract());
  if (!holdout.ok()) return ctx.fail(holdout.status());
  ctx.holdout = std::move(*holdout);
  ctx.contract = base->contract();
  rj->schema_hash = ctx.model->schema().Hash();
  rj->schema = ctx.model->schema();
  rj->num_elements = rj->schema.NumElements();
  rj->codec = CodecParamsOf(spec);
  rj->local_epochs = spec.local_epochs();
  rj->accept_partial = spec.selection().accept_partial_work();
  rj->async = spec.async().enabled();
  rj->staleness_exponent = spec.async().staleness_exponent();
  rj->max_staleness = spec.async().max_staleness();
  rj->max_norm = spec.aggregation().max_update_norm();
  rj->max_samples = options_.max_update_samples;
  rj->clip_over_norm = spec.aggregation().over_norm() == "clip";
  auto strategy = aggregation::Strategy::Create(StrategyConfigOf(spec), rj->num_elements);
  if (!strategy.ok()) return ctx.fail(strategy.status());
  if (!ctx.job.server_state_sha256().empty()) {
    auto state = registry->ReadBlob(ctx.job.server_state_sha256());
    absl::Status st = state.ok() ? (*strategy)->LoadState(*state) : state.status();
    if (!st.ok()) {
      return ctx.fail(absl::DataLossError(
          absl::StrCat("cannot restore the server optimizer's state after round ",
                       ctx.job.completed_rounds(), ": ", st.message())));
    }
  }
  ctx.job.set_strategy((*strategy)->name());
  {
    MutexLock lock(&rj->mu);
    rj->strategy = std::move(*strategy);
  }
  ctx.filter.labels = {spec.selector().begin(), spec.selector().end()};
  ctx.filter.capability = "train";
  ctx.filter.min_cpu_cores = spec.selection().min_cpu_cores();
  ctx.filter.min_memory_mb = spec.selection().min_memory_mb();

  // A round that was in flight when the previous process died is recorded as interrupted.
  for (auto& info : *ctx.job.mutable_rounds()) {
    if (info.state() == "training") {
      info.set_state("interrupted");
      info.set_reason("the coordinator restarted during the round");
    }
  }
  if (ctx.job.completed_rounds() == 0 && ctx.holdout.size() > 0) {
    auto eval = models::ScoreModel(*ctx.model, ctx.contract, ctx.holdout, options_.model_check);
    if (eval.ok()) ctx.job.set_initial_val_accuracy(eval->accuracy);
  }
  ctx.job.set_state(v1::JOB_RUNNING);
  ctx.persist().IgnoreError();  // logged; the next persist retries

  const Outcome outcome = rj->async ? RunAsync(ctx) : RunRounds(ctx);
  if (outcome == Outcome::kFailed) return;  // ctx.fail has run
  if (outcome == Outcome::kStopped) {
    std::string cancelled;
    {
      MutexLock lock(&rj->mu);
      cancelled = rj->cancelled;
    }
    if (!cancelled.empty()) {
      ctx.job.set_state(v1::JOB_CANCELLED);
      ctx.job.set_error(cancelled);
      ctx.persist().IgnoreError();  // logged
      Emit("job.cancelled", ctx.job, ctx.job.completed_rounds(), cancelled);
      JobsFinishedCounter("cancelled").Increment();
      LOG(INFO) << "job=" << id << " " << cancelled;
    } else {
      LOG(INFO) << "job=" << id << " paused at shutdown after round " << ctx.job.completed_rounds();
    }
    RunningJobsGauge().Decrement();
    return;
  }

  // Register the result as a new version.
  v1::Version version;
  version.set_model(spec.model());
  version.set_parent_version(base->version());
  version.set_sha256(ctx.global_sha);
  version.set_schema_hash(rj->schema_hash);
  version.set_job_id(id);
  version.set_round(ctx.job.completed_rounds());
  version.set_creator(ctx.job.creator());
  version.set_reason(spec.reason().empty() ? absl::StrCat("federated training job ", id)
                                           : spec.reason());
  version.set_strategy(
      rj->async ? absl::StrCat("fedbuff(k=", spec.async().buffer_size(), ")+", ctx.job.strategy())
                : ctx.job.strategy());
  *version.mutable_contract() = base->contract();
  *version.mutable_schema() = ctx.model->schema().ToProto();
  for (const auto& [node, n] : ctx.participants) {
    auto* p = version.add_participants();
    p->set_node_id(node);
    p->set_num_samples(n);
  }
  if (ctx.job.rounds_size() > 0) {
    const v1::RoundInfo& last = ctx.job.rounds(ctx.job.rounds_size() - 1);
    (*version.mutable_metrics())["val_accuracy"] = last.val_accuracy();
    (*version.mutable_metrics())["val_loss"] = last.val_loss();
    (*version.mutable_metrics())["train_loss"] = last.train_loss();
  }
  ctx.job.set_state(v1::JOB_SUCCEEDED);
  ctx.job.set_updated_unix_ms(absl::ToUnixMillis(clock->Now()));
  auto registered = registry->FinishJob(ctx.job, version);
  if (!registered.ok()) return ctx.fail(registered.status());
  {
    MutexLock lock(&rj->mu);
    rj->job = ctx.job;
    rj->job.set_result_version(registered->version());
  }
  LOG(INFO) << "job=" << id << " succeeded: registered " << spec.model() << " v"
            << registered->version();
  Emit("version.registered", ctx.job, ctx.job.completed_rounds(),
       absl::StrCat(spec.model(), " v", registered->version(), " from job ", id),
       registered->version());
  Emit("job.completed", ctx.job, ctx.job.completed_rounds(),
       absl::StrCat("registered ", spec.model(), " v", registered->version()),
       registered->version());
  JobsFinishedCounter("succeeded").Increment();
  RunningJobsGauge().Decrement();
  if (options_.on_registered) options_.on_registered(*registered);
}

bool JobManager::Stopping(Running& rj) const {
  MutexLock lock(&rj.mu);
  return rj.stop;
}

v1::CloudMessage JobManager::NewTask(const Context& ctx, int round, const std::string& task_id,
                                     absl::Time deadline) const {
  const v1::JobSpec& spec = ctx.job.spec();
  v1::CloudMessage msg;
  v1::TrainTask* task = msg.mutable_train_task();
  task->set_task_id(task_id);
  task->set_job_id(ctx.job.id());
  task->set_round(round);
  task->set_model(spec.model());
  task->set_base_sha256(ctx.global_sha);
  task->set_schema_hash(ctx.rj->schema_hash);
  task->set_optimizer(spec.optimizer() == "adam" ? v1::ADAM : v1::SGD);
  task->set_learning_rate(spec.learning_rate());
  task->set_epochs(spec.local_epochs());
  task->set_batch_size(spec.batch_size());
  task->set_proximal_mu(spec.proximal_mu());
  task->set_momentum(spec.momentum());
  task->set_accept_partial_work(spec.selection().accept_partial_work());
  task->set_encoding(static_cast<v1::Encoding>(ctx.rj->codec.encoding));
  task->set_topk_fraction(ctx.rj->codec.topk_fraction);
  task->set_block_size(ctx.rj->codec.block_size);
  task->set_deadline_unix_ms(absl::ToUnixMillis(deadline));
  task->set_seed(spec.seed() * 1000003ULL + static_cast<uint64_t>(round));
  return msg;
}

absl::Status JobManager::CompleteRound(Context& ctx, v1::RoundInfo* info, const FlatTensor& next,
                                       absl::Time started) {
  registry::Registry* registry = options_.registry;
  const std::string& id = ctx.job.id();
  FEDGE_RETURN_IF_ERROR(ctx.model->SetFlat(next));
  FEDGE_ASSIGN_OR_RETURN(std::string bytes, ctx.model->Serialize());
  FEDGE_ASSIGN_OR_RETURN(std::string sha, registry->PutBlob(bytes));
  std::string state;
  {
    MutexLock lock(&ctx.rj->mu);
    state = ctx.rj->strategy->SaveState();
  }
  if (!state.empty()) {
    FEDGE_ASSIGN_OR_RETURN(std::string state_sha, registry->PutBlob(state));
    ctx.job.set_server_state_sha256(state_sha);
  }
  if (ctx.holdout.size() > 0) {
    auto eval = models::ScoreModel(*ctx.model, ctx.contract, ctx.holdout, options_.model_check);
    if (eval.ok()) {
      info->set_val_accuracy(eval->accuracy);
      info->set_val_loss(eval->loss);
    } else {
      LOG(WARNING) << "job=" << id << " round=" << info->round()
                   << " evaluation failed: " << eval.status();
    }
  }
  info->set_state("done");
  info->set_seconds(absl::ToDoubleSeconds(options_.clock->Now() - started));
  ctx.job.set_completed_rounds(info->round());
  ctx.global_sha = sha;
  if (!ctx.persist().ok()) return absl::InternalError("cannot persist the round");
  RoundsCounter("done").Increment();
  RoundSeconds().Observe(info->seconds());
  ParticipantsGauge().Set(info->participants());
  RoundBytesCounter("up").Increment(static_cast<double>(info->bytes_up()));
  RoundBytesCounter("down").Increment(static_cast<double>(info->bytes_down()));
  Emit("round.completed", ctx.job, info->round(),
       absl::StrFormat("%d update(s), %d samples, val_accuracy %.4f", info->participants(),
                       info->samples(), info->val_accuracy()));
  LOG(INFO) << "job=" << id << " round=" << info->round() << " done: " << info->participants()
            << " update(s) (" << info->partial() << " partial, " << info->dropped() << " dropped), "
            << info->samples() << " samples, train_loss=" << info->train_loss()
            << " val_accuracy=" << info->val_accuracy();
  return absl::OkStatus();
}

JobManager::Outcome JobManager::RunRounds(Context& ctx) {
  Running& rj = *ctx.rj;
  Clock* clock = options_.clock;
  const v1::JobSpec spec = ctx.job.spec();
  const std::string id = ctx.job.id();
  for (int round = ctx.job.completed_rounds() + 1; round <= spec.rounds(); ++round) {
    bool done = false;
    std::string reason;
    for (int attempt = 1; attempt <= 1 + spec.max_round_retries() && !done; ++attempt) {
      const absl::Time started = clock->Now();
      // 1. Wait for enough eligible nodes.
      std::vector<std::string> eligible;
      const absl::Time wait_until = started + absl::Milliseconds(spec.wait_for_clients_ms());
      while (true) {
        eligible = options_.fleet->Eligible(ctx.filter);
        if (static_cast<int>(eligible.size()) >= spec.min_clients() || Stopping(rj) ||
            clock->Now() >= wait_until) {
          break;
        }
        MutexLock lock(&rj.mu);
        rj.cv.WaitWithTimeout(&rj.mu, absl::Milliseconds(50));
      }
      if (Stopping(rj)) return Outcome::kStopped;
      v1::RoundInfo* info = ctx.job.add_rounds();
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
        ctx.persist().IgnoreError();  // logged; the next persist retries
        continue;
      }
      // 2. Select (seeded, so a rerun selects the same nodes).
      const RoundSize size = SizeRound(spec, static_cast<int>(eligible.size()));
      std::mt19937_64 rng(spec.seed() * 1000003ULL + static_cast<uint64_t>(round) * 7919ULL +
                          static_cast<uint64_t>(attempt));
      std::shuffle(eligible.begin(), eligible.end(), rng);
      eligible.resize(static_cast<size_t>(size.asked));
      std::sort(eligible.begin(), eligible.end());
      const FlatTensor base_flat = ctx.model->Flat();
      const absl::Time deadline = clock->Now() + absl::Milliseconds(spec.round_timeout_ms());
      std::vector<std::pair<std::string, v1::CloudMessage>> sends;
      std::map<std::string, int64_t> caps;
      for (const std::string& node : eligible) caps[node] = options_.fleet->LocalSamples(node);
      {
        MutexLock lock(&rj.mu);
        rj.round = round;
        rj.accepting = true;
        rj.tasks.clear();
        rj.sample_caps.clear();
        rj.received.clear();
        rj.failed.clear();
        rj.why.clear();
        rj.target = size.asked > size.target ? size.target : 0;
        rj.ResetRoundTotals();
        for (const std::string& node : eligible) {
          v1::CloudMessage msg = NewTask(
              ctx, round, absl::StrCat(id, "-r", round, "-a", attempt, "-", node), deadline);
          rj.tasks[msg.train_task().task_id()] = node;
          rj.sample_caps[msg.train_task().task_id()] = caps[node];
          sends.emplace_back(node, std::move(msg));
        }
      }
      info->set_state("training");
      RoundsStartedCounter().Increment();
      info->set_selected(size.asked);
      ctx.persist().IgnoreError();  // logged; the next persist retries
      LOG(INFO) << "job=" << id << " round=" << round << " started with " << size.asked
                << " node(s)"
                << (size.asked > size.target ? absl::StrCat(" for ", size.target, " update(s)")
                                             : "");
      for (auto& [node, msg] : sends) {
        if (!options_.fleet->Send(node, msg)) {
          LOG(WARNING) << "job=" << id << " round=" << round << " node=" << node
                       << " went away before its task was sent";
          MutexLock lock(&rj.mu);
          rj.failed.insert(msg.train_task().task_id());
          rj.why[msg.train_task().task_id()] = "lost: the node went away before its task was sent";
        }
      }
      // 3. Wait for every update (or the over-selected round's target), or the deadline, or
      // until the tasks still out cannot make up the minimum.
      absl::StatusOr<FlatTensor> next = absl::UnknownError("");
      std::map<std::string, int64_t> round_samples;
      {
        MutexLock lock(&rj.mu);
        auto answered = [&rj, &spec]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(rj.mu) {
          const size_t out_of_play = rj.failed.size() + rj.dropped.size();
          const size_t possible = rj.tasks.size() > out_of_play ? rj.tasks.size() - out_of_play : 0;
          return rj.received.size() + out_of_play >= rj.tasks.size() ||
                 (rj.target > 0 && static_cast<int>(rj.received.size()) >= rj.target) ||
                 static_cast<int>(possible) < spec.min_clients();
        };
        while (!rj.stop && !answered() && clock->Now() < deadline) {
          rj.cv.WaitWithTimeout(&rj.mu, absl::Milliseconds(50));
        }
        if (rj.stop) {
          rj.accepting = false;
          return Outcome::kStopped;
        }
        rj.accepting = false;
        round_samples = rj.TakeRoundTotals(info);
        rj.RecordOutcomes(clock->Now() >= deadline, spec.round_timeout_ms(), info);
        if (info->participants() >= spec.min_clients()) {
          const absl::Time begin = absl::Now();
          next = rj.strategy->Finish(base_flat);
          AggregationSeconds().Observe(absl::ToDoubleSeconds(absl::Now() - begin));
        }
      }
      if (info->participants() < spec.min_clients()) {
        std::vector<std::string> nodes;
        for (const v1::NodeOutcome& o : info->outcomes()) {
          if (o.outcome() != "folded") {
            nodes.push_back(absl::StrCat(o.node_id(), " ", o.outcome(), ": ", o.reason()));
          }
        }
        reason = absl::StrCat("only ", info->participants(), " of the minimum ", spec.min_clients(),
                              " update(s) arrived", nodes.empty() ? "" : ": ",
                              absl::StrJoin(nodes, "; "));
      } else if (!next.ok()) {
        reason = std::string(next.status().message());
      } else {
        // 4. The new global model: write its archive, score it, persist the round.
        absl::Status st = CompleteRound(ctx, info, *next, started);
        if (!st.ok()) {
          ctx.fail(st);
          return Outcome::kFailed;
        }
        for (const auto& [node, n] : round_samples) ctx.participants[node] = n;
        done = true;
        break;
      }
      info->set_state(attempt <= spec.max_round_retries() ? "retrying" : "failed");
      info->set_reason(reason);
      info->set_seconds(absl::ToDoubleSeconds(clock->Now() - started));
      RoundsCounter(attempt <= spec.max_round_retries() ? "retried" : "failed").Increment();
      LOG(WARNING) << "job=" << id << " round=" << round << " attempt " << attempt << ": "
                   << reason;
      ctx.persist().IgnoreError();  // logged; the next persist retries
    }
    if (Stopping(rj)) return Outcome::kStopped;
    if (!done) {
      ctx.fail(absl::DeadlineExceededError(absl::StrCat("round ", round, " failed after ",
                                                        1 + spec.max_round_retries(),
                                                        " attempt(s): ", reason)));
      return Outcome::kFailed;
    }
  }
  return Outcome::kFinished;
}

JobManager::Outcome JobManager::RunAsync(Context& ctx) {
  Running& rj = *ctx.rj;
  Clock* clock = options_.clock;
  const v1::JobSpec spec = ctx.job.spec();
  const std::string id = ctx.job.id();
  const int buffer = spec.async().buffer_size();
  // A step that folds nothing for this long fails the job.
  const absl::Duration patience =
      absl::Milliseconds(spec.round_timeout_ms()) * (1 + spec.max_round_retries()) +
      absl::Milliseconds(spec.wait_for_clients_ms());
  std::map<std::string, absl::Time> deadlines;  // outstanding task -> its deadline
  uint64_t sequence = 0;
  std::mt19937_64 rng(spec.seed() * 1000003ULL + 17);
  {
    MutexLock lock(&rj.mu);
    rj.round = ctx.job.completed_rounds() + 1;
    rj.accepting = true;
    rj.ResetRoundTotals();
  }
  for (int step = ctx.job.completed_rounds() + 1; step <= spec.rounds(); ++step) {
    const absl::Time started = clock->Now();
    absl::Time last_progress = started;
    int last_folded = 0;
    v1::RoundInfo* info = ctx.job.add_rounds();
    info->set_round(step);
    info->set_attempt(1);
    info->set_state("training");
    RoundsStartedCounter().Increment();
    ctx.persist().IgnoreError();  // logged; the next persist retries
    int selected = 0;
    while (true) {
      if (Stopping(rj)) {
        MutexLock lock(&rj.mu);
        rj.accepting = false;
        return Outcome::kStopped;
      }
      const absl::Time now = clock->Now();
      // Tasks past their deadline free their node.
      std::set<std::string> busy;
      int outstanding = 0;
      {
        MutexLock lock(&rj.mu);
        for (auto it = deadlines.begin(); it != deadlines.end();) {
          if (rj.tasks.count(it->first) == 0) {
            it = deadlines.erase(it);
          } else if (now >= it->second) {
            LOG(WARNING) << "job=" << id << " step=" << step << " task " << it->first
                         << " missed its deadline";
            rj.tasks.erase(it->first);
            it = deadlines.erase(it);
          } else {
            ++it;
          }
        }
        for (const auto& [task, node] : rj.tasks) busy.insert(node);
        outstanding = static_cast<int>(rj.tasks.size());
      }
      // Keep `concurrency` nodes training, each on the model current when it starts.
      std::vector<std::string> idle;
      for (const std::string& node : options_.fleet->Eligible(ctx.filter)) {
        if (busy.count(node) == 0) idle.push_back(node);
      }
      int concurrency = spec.async().concurrency();
      if (concurrency == 0) concurrency = spec.clients_per_round();
      if (concurrency == 0) concurrency = static_cast<int>(idle.size()) + outstanding;
      std::shuffle(idle.begin(), idle.end(), rng);
      const absl::Time deadline = now + absl::Milliseconds(spec.round_timeout_ms());
      for (const std::string& node : idle) {
        if (outstanding >= concurrency) break;
        v1::CloudMessage msg =
            NewTask(ctx, step, absl::StrCat(id, "-s", step, "-", ++sequence, "-", node), deadline);
        const int64_t cap = options_.fleet->LocalSamples(node);
        {
          MutexLock lock(&rj.mu);
          // Caps of tasks no longer out are dropped as new ones are given.
          for (auto it = rj.sample_caps.begin(); it != rj.sample_caps.end();) {
            it = rj.tasks.count(it->first) > 0 ? std::next(it) : rj.sample_caps.erase(it);
          }
          rj.tasks[msg.train_task().task_id()] = node;
          rj.sample_caps[msg.train_task().task_id()] = cap;
        }
        if (options_.fleet->Send(node, msg)) {
          deadlines[msg.train_task().task_id()] = deadline;
          ++outstanding;
          ++selected;
        } else {
          MutexLock lock(&rj.mu);
          rj.tasks.erase(msg.train_task().task_id());
        }
      }
      // A full buffer makes the next global model.
      absl::StatusOr<FlatTensor> next = absl::UnknownError("");
      std::map<std::string, int64_t> round_samples;
      {
        MutexLock lock(&rj.mu);
        const int folded = rj.strategy->folded();
        if (folded != last_folded) {
          last_folded = folded;
          last_progress = now;
        }
        if (folded < buffer && now - last_progress > patience) {
          rj.accepting = false;
          next = absl::DeadlineExceededError(absl::StrCat("step ", step, " folded ", folded, " of ",
                                                          buffer, " update(s) and none came in ",
                                                          absl::FormatDuration(patience)));
        } else if (folded < buffer) {
          rj.cv.WaitWithTimeout(&rj.mu, absl::Milliseconds(50));
          continue;
        }
      }
      if (next.status().code() == absl::StatusCode::kDeadlineExceeded) {
        info->set_state("failed");
        info->set_reason(std::string(next.status().message()));
        ctx.fail(next.status());
        return Outcome::kFailed;
      }
      {
        MutexLock lock(&rj.mu);
        round_samples = rj.TakeRoundTotals(info);
        const absl::Time begin = absl::Now();
        next = rj.strategy->Finish(ctx.model->Flat());
        AggregationSeconds().Observe(absl::ToDoubleSeconds(absl::Now() - begin));
        // Updates that arrive from now on are folded into the next step.
        rj.round = step + 1;
        rj.ResetRoundTotals();
      }
      info->set_selected(selected);
      if (!next.ok()) {
        ctx.fail(next.status());
        return Outcome::kFailed;
      }
      absl::Status st = CompleteRound(ctx, info, *next, started);
      if (!st.ok()) {
        ctx.fail(st);
        return Outcome::kFailed;
      }
      for (const auto& [node, n] : round_samples) ctx.participants[node] = n;
      break;
    }
  }
  MutexLock lock(&rj.mu);
  rj.accepting = false;
  return Outcome::kFinished;
}

JobManager::RoundSize JobManager::SizeRound(const v1::JobSpec& spec, int eligible) {
  int target = eligible;
  if (spec.selection().fraction() > 0) {
    target = static_cast<int>(std::ceil(spec.selection().fraction() * eligible - 1e-9));
  }
  if (spec.clients_per_round() > 0) target = std::min(target, spec.clients_per_round());
  target = std::min(eligible, std::max(target, spec.min_clients()));
  int asked = static_cast<int>(std::ceil(target * (1 + spec.selection().over_selection()) - 1e-9));
  asked = std::min(eligible, std::max(asked, target));
  return {target, asked};
}

}  // namespace fedge::cloud::jobs
