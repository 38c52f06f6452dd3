#include "cloud/deploy/controller.h"

#include <algorithm>
#include <cmath>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cloud/events/event_log.h"
#include "common/metrics/metrics.h"
#include "common/status/status.h"
#include "glog/logging.h"

namespace fedge::cloud::deploy {
namespace {

// Error rate and latency are judged only once a node has answered this many predictions.
constexpr int64_t kMinPredictions = 10;

prometheus::Counter& DeploymentsCounter(const std::string& result) {
  return metrics::CounterFamily("fedge_cloud_deployments_total",
                                "Deployments ended, by result (succeeded, rolled_back).")
      .Add({{"result", result}});
}

bool Active(const v1::Deployment& d) {
  return d.state() == v1::DEPLOYMENT_RUNNING || d.state() == v1::DEPLOYMENT_PAUSED;
}

bool Matches(const v1::Node& node, const google::protobuf::Map<std::string, std::string>& sel) {
  for (const auto& [k, v] : sel) {
    auto it = node.labels().find(k);
    if (it == node.labels().end() || it->second != v) return false;
  }
  return std::find(node.capabilities().begin(), node.capabilities().end(), "predict") !=
         node.capabilities().end();
}

absl::Status CheckStrategy(v1::RolloutStrategy* s, absl::Duration default_timeout) {
  double last = 0;
  for (double w : s->waves()) {
    if (!(w > last) || w > 1.0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "waves must be increasing fractions in (0, 1], like 0.1,0.5,1; got ",
          absl::StrJoin(s->waves(), ",")));
    }
    last = w;
  }
  if (last < 1.0) s->add_waves(1.0);
  if (s->soak_ms() < 0 || s->wave_timeout_ms() < 0) {
    return absl::InvalidArgumentError("soak_ms and wave_timeout_ms must be >= 0");
  }
  if (s->wave_timeout_ms() == 0) s->set_wave_timeout_ms(absl::ToInt64Milliseconds(default_timeout));
  const auto& g = s->gate();
  if (g.max_error_rate() < 0 || g.max_error_rate() > 1 || g.min_feedback_accuracy() < 0 ||
      g.min_feedback_accuracy() > 1 || g.max_p99_latency_ms() < 0 || g.min_feedback() < 0) {
    return absl::InvalidArgumentError(
        "health gate: rates and accuracies are in [0, 1]; latency and counts are >= 0");
  }
  return absl::OkStatus();
}

std::string NewId(Clock* clock) {
  absl::BitGen gen;
  return absl::StrFormat("dep-%s-%04x",
                         absl::FormatTime("%Y%m%d-%H%M%S", clock->Now(), absl::UTCTimeZone()),
                         absl::Uniform<uint32_t>(gen, 0, 0x10000));
}

v1::VersionRef RefOf(const v1::Deployment& d) {
  v1::VersionRef ref;
  ref.set_model(d.model());
  ref.set_version(d.version());
  ref.set_sha256(d.sha256());
  return ref;
}

}  // namespace

Controller::Controller(Options options) : options_(options) {
  for (const char* r : {"succeeded", "rolled_back"}) DeploymentsCounter(r);
}

Controller::~Controller() { Stop(); }

absl::Status Controller::Start() {
  FEDGE_ASSIGN_OR_RETURN(auto all, options_.registry->ListDeployments());
  {
    MutexLock lock(&mu_);
    for (auto& d : all) {
      if (!Active(d)) continue;
      auto v = options_.registry->GetVersion(d.model(), d.version());
      if (v.ok()) schema_of_[d.id()] = v->schema_hash();
      LOG(INFO) << "deployment=" << d.id() << " resuming at wave " << d.current_wave();
      // Health from before the restart is gone: the current wave soaks again once its nodes
      // are back.
      d.set_soak_started_unix_ms(0);
      d.set_wave_deployed_unix_ms(absl::ToUnixMillis(options_.clock->Now()));
      deployments_[d.id()] = std::move(d);
    }
  }
  thread_ = std::thread([this] {
    while (true) {
      RunOnce();
      MutexLock lock(&mu_);
      if (stop_) return;
      cv_.WaitWithTimeout(&mu_, options_.tick);
      if (stop_) return;
    }
  });
  return absl::OkStatus();
}

void Controller::Stop() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

void Controller::Emit(const std::string& type, const v1::Deployment& d,
                      const std::string& message) {
  if (options_.events == nullptr) return;
  v1::Event e;
  e.set_type(type);
  e.set_model(d.model());
  e.set_version(d.version());
  e.set_deployment_id(d.id());
  e.set_message(message);
  (*e.mutable_attributes())["wave"] = absl::StrCat(d.current_wave());
  (*e.mutable_attributes())["waves"] = absl::StrCat(d.strategy().waves_size());
  options_.events->Append(std::move(e));
}

void Controller::PersistLocked(const v1::Deployment& d, const std::string& action,
                               const std::string& principal, const std::string& reason) {
  std::optional<v1::AuditEntry> audit;
  if (!action.empty()) {
    v1::AuditEntry a;
    a.set_action(action);
    a.set_principal(principal);
    a.set_model(d.model());
    a.set_version(d.version());
    a.set_deployment_id(d.id());
    a.set_reason(reason);
    audit = a;
  }
  absl::Status st = options_.registry->PutDeployment(d, audit);
  if (!st.ok()) LOG(ERROR) << "deployment=" << d.id() << " cannot be persisted: " << st;
}

absl::StatusOr<v1::Deployment> Controller::Create(const v1::CreateDeploymentRequest& request,
                                                  const std::string& principal) {
  int64_t number = request.version();
  if (number == 0) {
    auto prod = options_.registry->ResolveAlias(request.model(), "production");
    if (prod.ok()) number = *prod;
  }
  FEDGE_ASSIGN_OR_RETURN(v1::Version version,
                         options_.registry->GetVersion(request.model(), number));
  if (version.archived()) {
    return absl::FailedPreconditionError(absl::StrCat(
        version.model(), " v", version.version(), " is archived; its artifact is gone"));
  }
  v1::Deployment d;
  *d.mutable_strategy() = request.strategy();
  FEDGE_RETURN_IF_ERROR(CheckStrategy(d.mutable_strategy(), options_.default_wave_timeout));

  std::vector<v1::Node> targets;
  for (auto& node : options_.fleet->List()) {
    if (Matches(node, request.selector())) targets.push_back(std::move(node));
  }
  if (targets.empty()) {
    return absl::FailedPreconditionError(
        "no known node matches the selector and can serve; nothing to deploy to");
  }
  // Connected nodes first, so early waves are ones that can answer.
  std::stable_sort(targets.begin(), targets.end(), [](const v1::Node& a, const v1::Node& b) {
    return a.connected() > b.connected();
  });
  int64_t production = 0;
  if (auto prod = options_.registry->ResolveAlias(version.model(), "production"); prod.ok()) {
    production = *prod;
  }

  MutexLock lock(&mu_);
  for (const auto& [id, other] : deployments_) {
    if (other.model() == version.model() && Active(other)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "deployment ", id, " of ", other.model(), " is still ",
          v1::DeploymentState_Name(other.state()), "; roll it back or let it finish first"));
    }
  }
  d.set_id(NewId(options_.clock));
  d.set_model(version.model());
  d.set_version(version.version());
  d.set_sha256(version.sha256());
  *d.mutable_selector() = request.selector();
  d.set_state(v1::DEPLOYMENT_RUNNING);
  d.set_current_wave(1);
  d.set_reason(request.reason());
  d.set_creator(principal);
  const int64_t now = absl::ToUnixMillis(options_.clock->Now());
  d.set_created_unix_ms(now);
  d.set_updated_unix_ms(now);
  const int n = static_cast<int>(targets.size());
  std::vector<int> bounds;
  for (double w : d.strategy().waves()) {
    int b = static_cast<int>(std::ceil(w * n - 1e-9));
    b = std::max(b, bounds.empty() ? 1 : bounds.back());
    bounds.push_back(std::min(b, n));
  }
  for (int i = 0; i < n; ++i) {
    const v1::Node& node = targets[static_cast<size_t>(i)];
    v1::NodeRollout* r = d.add_nodes();
    r->set_node_id(node.node_id());
    int wave = 1;
    while (i >= bounds[static_cast<size_t>(wave - 1)]) ++wave;
    r->set_wave(wave);
    r->set_state("pending");
    auto active = node.active_versions().find(version.model());
    if (active != node.active_versions().end()) {
      *r->mutable_active() = active->second;
      if (active->second.sha256() != version.sha256()) *r->mutable_previous() = active->second;
      // A deploy must not silently change the inputs devices send.
      auto running = options_.registry->GetVersion(version.model(), active->second.version());
      if (running.ok() && !request.allow_schema_change() &&
          (running->schema_hash() != version.schema_hash() ||
           running->contract().feature_names_size() !=
               version.contract().feature_names_size())) {
        return absl::FailedPreconditionError(absl::StrCat(
            version.model(), " v", version.version(), " has another schema than v",
            running->version(), " running on ", node.node_id(),
            "; deploy with allow_schema_change if the devices are ready for it"));
      }
    }
    if (!r->has_previous() && production != 0 && production != version.version()) {
      auto prod = options_.registry->GetVersion(version.model(), production);
      if (prod.ok()) {
        r->mutable_previous()->set_model(prod->model());
        r->mutable_previous()->set_version(prod->version());
        r->mutable_previous()->set_sha256(prod->sha256());
      }
    }
  }
  schema_of_[d.id()] = version.schema_hash();
  d.set_status_message(absl::StrCat("wave 1 of ", d.strategy().waves_size()));
  PersistLocked(d, "deploy_create", principal, request.reason());
  Emit("deployment.started", d,
       absl::StrCat("deploying ", d.model(), " v", d.version(), " to ", n, " node(s) in ",
                    d.strategy().waves_size(), " wave(s)"));
  LOG(INFO) << "deployment=" << d.id() << " " << d.model() << " v" << d.version() << " to " << n
            << " node(s) by " << principal;
  auto& stored = deployments_[d.id()] = d;
  StepLocked(&stored);
  return stored;
}

absl::StatusOr<v1::Deployment> Controller::Get(const std::string& id) const {
  {
    MutexLock lock(&mu_);
    auto it = deployments_.find(id);
    if (it != deployments_.end()) return it->second;
  }
  return options_.registry->GetDeployment(id);
}

absl::StatusOr<std::vector<v1::Deployment>> Controller::List() const {
  FEDGE_ASSIGN_OR_RETURN(auto all, options_.registry->ListDeployments());
  MutexLock lock(&mu_);
  for (auto& d : all) {
    auto it = deployments_.find(d.id());
    if (it != deployments_.end()) d = it->second;
  }
  return all;
}

absl::StatusOr<v1::Deployment> Controller::Pause(const std::string& id,
                                                 const std::string& principal,
                                                 const std::string& reason) {
  MutexLock lock(&mu_);
  auto it = deployments_.find(id);
  if (it == deployments_.end() || it->second.state() != v1::DEPLOYMENT_RUNNING) {
    return absl::FailedPreconditionError(absl::StrCat("deployment ", id, " is not running"));
  }
  v1::Deployment& d = it->second;
  d.set_state(v1::DEPLOYMENT_PAUSED);
  d.set_status_message(absl::StrCat("paused by ", principal, ": ", reason));
  d.set_updated_unix_ms(absl::ToUnixMillis(options_.clock->Now()));
  PersistLocked(d, "deploy_pause", principal, reason);
  Emit("deployment.paused", d, d.status_message());
  return d;
}

absl::StatusOr<v1::Deployment> Controller::Resume(const std::string& id,
                                                  const std::string& principal,
                                                  const std::string& reason) {
  MutexLock lock(&mu_);
  auto it = deployments_.find(id);
  if (it == deployments_.end() || it->second.state() != v1::DEPLOYMENT_PAUSED) {
    return absl::FailedPreconditionError(absl::StrCat("deployment ", id, " is not paused"));
  }
  v1::Deployment& d = it->second;
  d.set_state(v1::DEPLOYMENT_RUNNING);
  // The soak starts over: what happened while paused was not watched.
  d.set_soak_started_unix_ms(0);
  d.set_wave_deployed_unix_ms(absl::ToUnixMillis(options_.clock->Now()));
  d.set_status_message(absl::StrCat("resumed by ", principal));
  PersistLocked(d, "deploy_resume", principal, reason);
  Emit("deployment.resumed", d, d.status_message());
  StepLocked(&d);
  return d;
}

absl::StatusOr<v1::Deployment> Controller::Rollback(const std::string& id,
                                                    const std::string& principal,
                                                    const std::string& reason) {
  MutexLock lock(&mu_);
  auto it = deployments_.find(id);
  v1::Deployment d;
  if (it != deployments_.end()) {
    d = it->second;
  } else {
    FEDGE_ASSIGN_OR_RETURN(d, options_.registry->GetDeployment(id));
    if (d.state() != v1::DEPLOYMENT_SUCCEEDED) {
      return absl::FailedPreconditionError(absl::StrCat(
          "deployment ", id, " is ", v1::DeploymentState_Name(d.state()), "; nothing to roll back"));
    }
  }
  RollbackLocked(&d, principal, reason.empty() ? "manual rollback" : reason);
  deployments_.erase(id);
  return d;
}

void Controller::OnHealth(const std::string& node_id, const v1::HealthReport& report) {
  MutexLock lock(&mu_);
  health_[{node_id, report.model()}] = report;
}

void Controller::OnDeployStatus(const std::string& node_id, const v1::DeployStatus& status) {
  MutexLock lock(&mu_);
  deploy_status_[{node_id, status.version().model()}] = status;
}

void Controller::SendLocked(v1::Deployment* d, v1::NodeRollout* node,
                            const v1::VersionRef& version, const std::string& schema_hash) {
  // Reports from before this command say nothing about what follows it.
  deploy_status_.erase({node->node_id(), d->model()});
  health_.erase({node->node_id(), d->model()});
  absl::Status st = options_.registry->SetDesiredVersion(node->node_id(), version);
  if (!st.ok()) LOG(WARNING) << "deployment=" << d->id() << " node=" << node->node_id() << ": " << st;
  options_.fleet->SetDesired(node->node_id(), version);
  v1::CloudMessage msg;
  *msg.mutable_deploy()->mutable_version() = version;
  msg.mutable_deploy()->set_schema_hash(schema_hash);
  msg.mutable_deploy()->set_deployment_id(d->id());
  if (!options_.fleet->Send(node->node_id(), msg)) {
    node->set_message("offline: it converges when it returns");
  }
}

void Controller::RollbackLocked(v1::Deployment* d, const std::string& principal,
                                const std::string& why) {
  for (auto& node : *d->mutable_nodes()) {
    if (node.state() == "pending") continue;  // never received the version
    if (!node.has_previous()) {
      // Nothing to go back to; at least stop pushing the rolled-back version at it.
      (void)options_.registry->ClearDesiredVersion(node.node_id(), d->model());
      options_.fleet->ClearDesired(node.node_id(), d->model());
      node.set_state("failed");
      node.set_message("no previous version to roll back to");
      continue;
    }
    std::string schema;
    auto prev = options_.registry->GetVersion(node.previous().model(), node.previous().version());
    if (prev.ok()) schema = prev->schema_hash();
    SendLocked(d, &node, node.previous(), schema);
    node.set_state("rolled_back");
  }
  d->set_state(v1::DEPLOYMENT_ROLLED_BACK);
  d->set_status_message(why);
  d->set_updated_unix_ms(absl::ToUnixMillis(options_.clock->Now()));
  PersistLocked(*d, "deploy_rollback", principal, why);
  Emit("deployment.rolled_back", *d, why);
  DeploymentsCounter("rolled_back").Increment();
  LOG(WARNING) << "deployment=" << d->id() << " rolled back by " << principal << ": " << why;
}

std::string Controller::JudgeLocked(const v1::Deployment& d) {
  const v1::HealthGate& gate = d.strategy().gate();
  for (const auto& node : d.nodes()) {
    if (node.wave() > d.current_wave() || node.state() != "active") continue;
    auto it = health_.find({node.node_id(), d.model()});
    if (it == health_.end() || it->second.version().sha256() != d.sha256()) continue;
    const v1::HealthReport& h = it->second;
    if (gate.max_error_rate() > 0 && h.predictions() >= kMinPredictions) {
      const double rate = static_cast<double>(h.errors()) / h.predictions();
      if (rate > gate.max_error_rate()) {
        return absl::StrFormat("node %s: error rate %.3f > %.3f over %d predictions",
                               node.node_id(), rate, gate.max_error_rate(), h.predictions());
      }
    }
    if (gate.max_p99_latency_ms() > 0 && h.predictions() >= kMinPredictions &&
        h.p99_latency_ms() > gate.max_p99_latency_ms()) {
      return absl::StrFormat("node %s: p99 latency %.1f ms > %.1f ms", node.node_id(),
                             h.p99_latency_ms(), gate.max_p99_latency_ms());
    }
    if (gate.min_feedback_accuracy() > 0 &&
        h.feedback() >= std::max<int64_t>(1, gate.min_feedback())) {
      const double acc = static_cast<double>(h.feedback_correct()) / h.feedback();
      if (acc < gate.min_feedback_accuracy()) {
        return absl::StrFormat("node %s: accuracy on feedback %.3f < %.3f over %d labels",
                               node.node_id(), acc, gate.min_feedback_accuracy(), h.feedback());
      }
    }
  }
  return "";
}

void Controller::StepLocked(v1::Deployment* d) {
  if (d->state() != v1::DEPLOYMENT_RUNNING) return;
  const absl::Time now = options_.clock->Now();
  const int64_t now_ms = absl::ToUnixMillis(now);
  std::map<std::string, v1::Node> fleet;
  for (auto& n : options_.fleet->List()) fleet[n.node_id()] = std::move(n);
  const v1::VersionRef target = RefOf(*d);
  bool changed = false;
  if (d->wave_deployed_unix_ms() == 0) {
    d->set_wave_deployed_unix_ms(now_ms);
    changed = true;
  }
  bool ready = true;
  int serving = 0;  // connected nodes of the current waves that run the version
  std::vector<std::string> waiting;
  for (auto& node : *d->mutable_nodes()) {
    if (node.wave() > d->current_wave()) continue;
    const v1::Node& info = fleet[node.node_id()];
    auto active = info.active_versions().find(d->model());
    if (active != info.active_versions().end()) *node.mutable_active() = active->second;
    if (node.state() == "pending") {
      SendLocked(d, &node, target, schema_of_[d->id()]);
      node.set_state("deploying");
      changed = true;
    }
    auto status = deploy_status_.find({node.node_id(), d->model()});
    if (node.state() == "deploying" && status != deploy_status_.end() &&
        status->second.version().sha256() == d->sha256() && !status->second.ok()) {
      node.set_state("failed");
      node.set_message(status->second.message());
      RollbackLocked(d, "controller",
                     absl::StrCat("node ", node.node_id(), " could not load v", d->version(), ": ",
                                  status->second.message()));
      return;
    }
    if (node.state() == "deploying" && node.active().sha256() == d->sha256()) {
      node.set_state("active");
      node.clear_message();
      changed = true;
    }
    auto h = health_.find({node.node_id(), d->model()});
    if (h != health_.end() && h->second.version().sha256() == d->sha256()) {
      v1::NodeHealth* nh = node.mutable_health();
      nh->set_predictions(h->second.predictions());
      nh->set_errors(h->second.errors());
      nh->set_p99_latency_ms(h->second.p99_latency_ms());
      nh->set_feedback(h->second.feedback());
      nh->set_feedback_correct(h->second.feedback_correct());
      nh->set_reported_unix_ms(h->second.sent_unix_ms());
    }
    if (node.state() == "active" && info.connected()) ++serving;
    // Offline nodes do not hold a wave back; they converge when they return.
    if (node.state() != "active" && info.connected()) {
      ready = false;
      waiting.push_back(node.node_id());
    }
  }
  // A wave is judged on nodes that actually serve it; with every node offline it waits.
  if (serving == 0) ready = false;
  if (!ready) {
    if (now_ms - d->wave_deployed_unix_ms() > d->strategy().wave_timeout_ms()) {
      RollbackLocked(d, "controller",
                     absl::StrCat("wave ", d->current_wave(), " did not converge within ",
                                  d->strategy().wave_timeout_ms() / 1000.0,
                                  " s; waiting on ", absl::StrJoin(waiting, ", ")));
      return;
    }
    if (changed) PersistLocked(*d, "", "", "");
    return;
  }
  if (d->soak_started_unix_ms() == 0) {
    d->set_soak_started_unix_ms(now_ms);
    d->set_status_message(absl::StrCat("wave ", d->current_wave(), " of ",
                                       d->strategy().waves_size(), " soaking"));
    changed = true;
  }
  const std::string breach = JudgeLocked(*d);
  if (!breach.empty()) {
    RollbackLocked(d, "controller", absl::StrCat("health gate breached in wave ",
                                                 d->current_wave(), ": ", breach));
    return;
  }
  if (now_ms - d->soak_started_unix_ms() >= d->strategy().soak_ms()) {
    d->set_updated_unix_ms(now_ms);
    if (d->current_wave() >= d->strategy().waves_size()) {
      d->set_state(v1::DEPLOYMENT_SUCCEEDED);
      d->set_status_message(absl::StrCat("all ", d->nodes_size(), " node(s) run v", d->version()));
      PersistLocked(*d, "deploy_complete", "controller", d->status_message());
      Emit("deployment.completed", *d, d->status_message());
      DeploymentsCounter("succeeded").Increment();
      LOG(INFO) << "deployment=" << d->id() << " completed";
      return;
    }
    d->set_current_wave(d->current_wave() + 1);
    d->set_soak_started_unix_ms(0);
    d->set_wave_deployed_unix_ms(now_ms);
    d->set_status_message(
        absl::StrCat("wave ", d->current_wave(), " of ", d->strategy().waves_size()));
    PersistLocked(*d, "", "", "");
    Emit("deployment.progressed", *d,
         absl::StrCat("wave ", d->current_wave() - 1, " healthy; starting wave ",
                      d->current_wave(), " of ", d->strategy().waves_size()));
    LOG(INFO) << "deployment=" << d->id() << " wave " << d->current_wave();
    StepLocked(d);
    return;
  }
  if (changed) {
    d->set_updated_unix_ms(now_ms);
    PersistLocked(*d, "", "", "");
  }
}

void Controller::RunOnce() {
  MutexLock lock(&mu_);
  for (auto it = deployments_.begin(); it != deployments_.end();) {
    StepLocked(&it->second);
    if (!Active(it->second)) {
      schema_of_.erase(it->first);
      it = deployments_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace fedge::cloud::deploy
