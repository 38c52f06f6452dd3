#include "cloud/policy/retrainer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cloud/events/event_log.h"
#include "common/metrics/metrics.h"
#include "common/status/status.h"
#include "glog/logging.h"

namespace fedge::cloud::policy {
namespace {

prometheus::Counter& TriggersCounter(const std::string& cause) {
  return metrics::CounterFamily("fedge_cloud_retrain_triggers_total",
                                "Retraining jobs started by a policy, by cause.")
      .Add({{"cause", cause}});
}

prometheus::Counter& StaleDriftCounter() {
  static auto& c =
      metrics::CounterFamily("fedge_cloud_drift_reports_stale_total",
                             "Drift reports ignored by the retrainer: about a version the node no "
                             "longer runs, or made before the model's last retraining started.")
          .Add({});
  return c;
}

absl::Duration Or(int64_t ms, absl::Duration fallback) {
  return ms > 0 ? absl::Milliseconds(ms) : fallback;
}

}  // namespace

Retrainer::Retrainer(Options options) : options_(options) {
  for (const char* c : {"drift quorum", "schedule", "data", "manual"}) TriggersCounter(c);
  StaleDriftCounter();
}

Retrainer::~Retrainer() { Stop(); }

void Retrainer::Start() {
  thread_ = std::thread([this] {
    while (true) {
      RunOnce();
      MutexLock lock(&mu_);
      if (stop_) return;
      cv_.WaitWithTimeout(&mu_, options_.tick);
      if (stop_) return;
    }
  });
}

void Retrainer::Stop() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

void Retrainer::Emit(const std::string& type, const std::string& model, int64_t version,
                     const std::string& job_id, const std::string& message) {
  if (options_.events == nullptr) return;
  v1::Event e;
  e.set_type(type);
  e.set_model(model);
  e.set_version(version);
  e.set_job_id(job_id);
  e.set_message(message);
  options_.events->Append(std::move(e));
}

bool Retrainer::OnDrift(const std::string& node_id, const v1::DriftReport& report) {
  // Only drift in the version the node serves now counts.
  for (const v1::Node& node : options_.fleet->List()) {
    if (node.node_id() != node_id) continue;
    auto active = node.active_versions().find(report.model());
    if (active != node.active_versions().end() &&
        active->second.sha256() != report.version().sha256()) {
      VLOG(1) << "node=" << node_id << " drift report about " << report.model() << " v"
              << report.version().version() << " ignored: the node now runs v"
              << active->second.version();
      StaleDriftCounter().Increment();
      return false;
    }
  }
  MutexLock lock(&mu_);
  ModelState& state = models_[report.model()];
  if (report.sent_unix_ms() > 0 && state.last_trigger != absl::Time() &&
      absl::FromUnixMillis(report.sent_unix_ms()) < state.last_trigger) {
    StaleDriftCounter().Increment();
    return false;  // made before the last retraining started: already answered
  }
  state.drift_by_node[node_id] = options_.clock->Now();
  cv_.SignalAll();
  return true;
}

std::string Retrainer::UnfinishedJobOf(const std::string& model) const {
  // Any unfinished job of the model counts: ours, an operator's, or one resumed at start-up.
  auto unfinished = options_.registry->UnfinishedJobs();
  if (!unfinished.ok()) return "(unknown: the registry cannot be read)";  // do not start another
  for (const auto& record : *unfinished) {
    if (record.job.spec().model() == model) return record.job.id();
  }
  return "";
}

absl::StatusOr<v1::Job> Retrainer::StartLocked(const std::string& model,
                                               const v1::RetrainPolicy& policy,
                                               const std::string& cause,
                                               const std::string& principal) {
  v1::JobSpec spec = policy.job();
  spec.set_model(model);
  spec.set_base_version(0);  // the latest version
  spec.set_trigger(cause);
  if (spec.reason().empty()) spec.set_reason(absl::StrCat("retraining: ", cause));
  auto job = options_.jobs->Start(spec, principal);
  ModelState& state = models_[model];
  if (!job.ok()) {
    // Back off for the cooldown instead of retrying every tick, and say why.
    state.last_trigger = options_.clock->Now();
    Emit("retrain.failed", model, 0, "",
         absl::StrCat("could not start retraining (", cause, "): ", job.status().message()));
    return job.status();
  }
  state.last_trigger = options_.clock->Now();
  state.drift_by_node.clear();  // these reports are answered
  TriggersCounter(cause.substr(0, cause.find(':'))).Increment();
  Emit("retrain.triggered", model, 0, job->id(), cause);
  LOG(INFO) << "job=" << job->id() << " retraining " << model << ": " << cause;
  return job;
}

absl::StatusOr<v1::Job> Retrainer::Trigger(const std::string& model, const std::string& cause,
                                           const std::string& principal) {
  FEDGE_ASSIGN_OR_RETURN(auto policies, options_.registry->RetrainPolicies());
  auto it = policies.find(model);
  if (it == policies.end()) {
    return absl::NotFoundError(absl::StrCat(
        "model ", model, " has no retraining policy; set one with fedgectl models retrain-policy"));
  }
  MutexLock lock(&mu_);
  if (const std::string running = UnfinishedJobOf(model); !running.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("a training job of ", model, " is still running: ", running));
  }
  return StartLocked(model, it->second, cause, principal);
}

void Retrainer::OnRegistered(const v1::Version& version) {
  if (options_.inbox != nullptr) {
    // New samples count from this version on.
    absl::Status st = options_.inbox->MarkSamples(version.model());
    if (!st.ok())
      LOG(WARNING) << "cannot record the sample baseline of " << version.model() << ": " << st;
  }
  auto policies = options_.registry->RetrainPolicies();
  if (!policies.ok()) return;
  auto it = policies->find(version.model());
  if (it == policies->end() || !it->second.enabled() || !it->second.auto_deploy()) return;
  // Only results of jobs a policy started (their trigger is recorded with the job) roll out.
  if (version.job_id().empty()) return;
  auto job = options_.jobs->Get(version.job_id());
  if (!job.ok() || job->spec().trigger().empty()) return;
  MutexLock lock(&mu_);
  ModelState& state = models_[version.model()];
  if (!version.validation().passed()) {
    Emit("retrain.held", version.model(), version.version(), version.job_id(),
         absl::StrCat("v", version.version(), " did not pass its gate: ",
                      version.has_validation() ? version.validation().reason() : "not validated"));
    return;
  }
  v1::CreateDeploymentRequest req;
  req.set_model(version.model());
  req.set_version(version.version());
  *req.mutable_strategy() = it->second.rollout();
  req.set_reason(absl::StrCat("automatic rollout of retrained v", version.version()));
  auto d = options_.deploy->Create(req, "retrainer");
  if (!d.ok()) {
    Emit("retrain.held", version.model(), version.version(), version.job_id(),
         absl::StrCat("rollout not started: ", d.status().message()));
    return;
  }
  state.pending_rollout = d->id();
}

void Retrainer::RunOnce() {
  auto policies = options_.registry->RetrainPolicies();
  if (!policies.ok()) return;
  const absl::Time now = options_.clock->Now();
  const std::vector<v1::Node> nodes = options_.fleet->List();
  MutexLock lock(&mu_);
  for (auto it = models_.begin(); it != models_.end();) {  // reports for models without a policy
    it = policies->count(it->first) ? std::next(it) : models_.erase(it);
  }
  for (const auto& [model, policy] : *policies) {
    ModelState& state = models_[model];
    // Promote a finished automatic rollout.
    if (!state.pending_rollout.empty()) {
      auto d = options_.deploy->Get(state.pending_rollout);
      if (d.ok() && d->state() == v1::DEPLOYMENT_SUCCEEDED) {
        auto promoted = options_.registry->SetAlias(
            model, "production", d->version(),
            {"retrainer", absl::StrCat("automatic rollout ", d->id(), " succeeded")}, "promote");
        if (promoted.ok()) {
          Emit("version.promoted", model, d->version(), "",
               absl::StrCat("production -> v", d->version(), " (automatic)"));
        }
        state.pending_rollout.clear();
      } else if (d.ok() && d->state() != v1::DEPLOYMENT_RUNNING &&
                 d->state() != v1::DEPLOYMENT_PAUSED) {
        state.pending_rollout.clear();  // rolled back or failed: production stays
      }
    }
    if (!policy.enabled() || !UnfinishedJobOf(model).empty()) continue;  // debounce
    const absl::Duration cooldown = Or(policy.cooldown_ms(), absl::Minutes(30));
    if (state.last_trigger != absl::Time() && now - state.last_trigger < cooldown) continue;
    // Drift quorum over the recent window.
    const absl::Duration window = Or(policy.drift_window_ms(), absl::Minutes(10));
    std::vector<std::string> drifted;
    for (auto it = state.drift_by_node.begin(); it != state.drift_by_node.end();) {
      if (now - it->second > window) {
        it = state.drift_by_node.erase(it);
      } else {
        drifted.push_back(it->first);
        ++it;
      }
    }
    int serving = 0;
    for (const auto& n : nodes) serving += n.active_versions().count(model) > 0;
    int quorum = policy.drift_quorum_nodes();
    if (policy.drift_quorum_fraction() > 0) {
      const int by_share = std::max(1, static_cast<int>(std::ceil(policy.drift_quorum_fraction() *
                                                                  std::max(1, serving))));
      quorum = quorum > 0 ? std::min(quorum, by_share) : by_share;
    }
    if (quorum > 0 && static_cast<int>(drifted.size()) >= quorum) {
      auto job = StartLocked(model, policy,
                             absl::StrCat("drift quorum: ", absl::StrJoin(drifted, ", ")),
                             "retrainer");
      if (!job.ok()) LOG(WARNING) << "retraining " << model << " failed to start: " << job.status();
      continue;
    }
    if (policy.min_new_samples() > 0 && options_.inbox != nullptr) {
      auto marks = options_.inbox->SampleMarks(model);
      auto latest = options_.inbox->LatestMetric(inbox::kSamplesTotal);
      if (marks.ok() && latest.ok()) {
        if (!marks->has_value()) {
          // First sight of the policy: samples count from now.
          absl::Status st = options_.inbox->MarkSamples(model);
          if (!st.ok())
            LOG(WARNING) << "cannot record the sample baseline of " << model << ": " << st;
        } else {
          double fresh = 0;
          for (const auto& [node, total] : *latest) {
            auto mark = (*marks)->find(node);
            fresh += std::max(0.0, total - (mark == (*marks)->end() ? 0.0 : mark->second));
          }
          if (fresh >= static_cast<double>(policy.min_new_samples())) {
            auto job = StartLocked(
                model, policy,
                absl::StrCat("data: ", static_cast<int64_t>(fresh),
                             " new labelled samples across the fleet since the latest version"),
                "retrainer");
            if (!job.ok()) {
              LOG(WARNING) << "retraining " << model << " failed to start: " << job.status();
            }
            continue;
          }
        }
      }
    }
    if (policy.schedule_ms() > 0) {
      // The schedule counts from the last retraining, or from when the policy is first seen.
      if (state.schedule_anchor == absl::Time()) state.schedule_anchor = now;
      const absl::Time since = std::max(state.schedule_anchor, state.last_trigger);
      if (now - since >= absl::Milliseconds(policy.schedule_ms())) {
        auto job = StartLocked(model, policy, "schedule", "retrainer");
        if (!job.ok()) {
          LOG(WARNING) << "retraining " << model << " failed to start: " << job.status();
        }
      }
    }
  }
}

}  // namespace fedge::cloud::policy
