// fedgectl's lifecycle commands: governance of the registry, rollouts, events.

#include <algorithm>
#include <chrono>
#include <iostream>
#include <thread>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "tools/fedgectl/cli.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int64_t, version);
ABSL_DECLARE_FLAG(std::string, reason);
ABSL_DECLARE_FLAG(std::string, selector);
ABSL_DECLARE_FLAG(bool, watch);
ABSL_DECLARE_FLAG(std::string, holdout_csv);
ABSL_DECLARE_FLAG(bool, holdout_synthetic);
ABSL_DECLARE_FLAG(std::string, label_column);
ABSL_DECLARE_FLAG(uint64_t, synthetic_seed);
ABSL_DECLARE_FLAG(int, synthetic_sites);
ABSL_DECLARE_FLAG(int, synthetic_window);
ABSL_DECLARE_FLAG(std::string, description);
ABSL_DECLARE_FLAG(int, rounds);
ABSL_DECLARE_FLAG(int, clients_per_round);
ABSL_DECLARE_FLAG(int, min_clients);
ABSL_DECLARE_FLAG(int64_t, round_timeout_ms);
ABSL_DECLARE_FLAG(double, lr);
ABSL_DECLARE_FLAG(int, epochs);
ABSL_DECLARE_FLAG(int, batch_size);
ABSL_DECLARE_FLAG(std::string, optimizer);
ABSL_DECLARE_FLAG(double, proximal_mu);
ABSL_DECLARE_FLAG(double, momentum);
ABSL_DECLARE_FLAG(std::string, aggregation);
ABSL_DECLARE_FLAG(double, trim_fraction);
ABSL_DECLARE_FLAG(int, byzantine);
ABSL_DECLARE_FLAG(int, multi_krum);
ABSL_DECLARE_FLAG(double, clip_norm);
ABSL_DECLARE_FLAG(double, max_update_norm);
ABSL_DECLARE_FLAG(std::string, over_norm);
ABSL_DECLARE_FLAG(std::string, server_optimizer);
ABSL_DECLARE_FLAG(double, server_lr);
ABSL_DECLARE_FLAG(double, server_beta1);
ABSL_DECLARE_FLAG(double, server_beta2);
ABSL_DECLARE_FLAG(double, server_tau);
ABSL_DECLARE_FLAG(double, fraction);
ABSL_DECLARE_FLAG(std::string, cohort);
ABSL_DECLARE_FLAG(int, min_cpu_cores);
ABSL_DECLARE_FLAG(int64_t, min_memory_mb);
ABSL_DECLARE_FLAG(double, over_selection);
ABSL_DECLARE_FLAG(bool, accept_partial_work);
ABSL_DECLARE_FLAG(std::string, compression);
ABSL_DECLARE_FLAG(double, topk_fraction);
ABSL_DECLARE_FLAG(int, block_size);
ABSL_DECLARE_FLAG(bool, async);
ABSL_DECLARE_FLAG(int, buffer_size);
ABSL_DECLARE_FLAG(int, concurrency);
ABSL_DECLARE_FLAG(double, staleness_exponent);
ABSL_DECLARE_FLAG(int, max_staleness);

ABSL_FLAG(std::string, alias, "", "Alias name for models alias / promote (promote: production).");
ABSL_FLAG(bool, force, false, "models promote: promote despite a failed or missing validation.");
ABSL_FLAG(bool, delete_alias, false, "models alias: delete the alias instead of setting it.");
ABSL_FLAG(std::string, tags, "", "models tag: key=value pairs; an empty value deletes the key.");
ABSL_FLAG(double, min_accuracy, -1, "Gate: minimum holdout accuracy (unset: not checked).");
ABSL_FLAG(double, max_loss, -1, "Gate: maximum holdout loss (unset: not checked).");
ABSL_FLAG(double, max_regression, -1,
          "Gate: how far below the production version's accuracy a candidate may be.");
ABSL_FLAG(bool, federated, false,
          "Gate: also score candidates on the edges' local holdouts (federated evaluation).");
ABSL_FLAG(int, federated_min_nodes, 1, "Gate: edges that must answer a federated evaluation.");
ABSL_FLAG(int, keep_versions, -1, "Retention: versions to keep (0 keeps all).");
ABSL_FLAG(std::string, waves, "",
          "deploy create: cumulative fractions of nodes per wave, e.g. 0.25,0.5,1 (empty: all at "
          "once).");
ABSL_FLAG(int64_t, soak_ms, 0, "deploy create: how long each wave must stay healthy.");
ABSL_FLAG(double, min_feedback_accuracy, 0,
          "deploy create: roll back if accuracy on Feedback labels falls below this.");
ABSL_FLAG(int64_t, min_feedback, 20, "deploy create: labels needed before accuracy is judged.");
ABSL_FLAG(double, max_error_rate, 0, "deploy create: roll back above this Predict error rate.");
ABSL_FLAG(double, max_p99_ms, 0, "deploy create: roll back above this p99 Predict latency.");
ABSL_FLAG(int64_t, wave_timeout_ms, 0, "deploy create: a wave must converge within this.");
ABSL_FLAG(bool, allow_schema_change, false,
          "deploy create: deploy a version whose schema differs from what the nodes run.");
ABSL_FLAG(bool, enable, true, "models retrain-policy: enable (true) or disable the policy.");
ABSL_FLAG(int, drift_quorum_nodes, 0, "Retrain when this many nodes report drift.");
ABSL_FLAG(double, drift_quorum_fraction, 0,
          "Retrain when this share of the nodes serving the model report drift.");
ABSL_FLAG(int64_t, drift_window_ms, 600000, "Drift reports count toward a quorum this long.");
ABSL_FLAG(int64_t, schedule_ms, 0, "Retrain every this many ms (0: no schedule).");
ABSL_FLAG(int64_t, min_new_samples, 0,
          "Retrain once the fleet's edges have taken this many new labelled samples since the "
          "latest version (0: not used).");
ABSL_FLAG(int64_t, cooldown_ms, 1800000, "No new retraining this long after one starts.");
ABSL_FLAG(bool, auto_deploy, false,
          "Roll a retrained version that passes the gate out (--waves, --soak_ms, gate flags) "
          "and promote it when the rollout succeeds.");
ABSL_FLAG(int64_t, after_id, 0, "events: start after this event id.");
ABSL_FLAG(std::string, types, "", "events: types to show, e.g. deployment.,job.completed.");
ABSL_FLAG(int, limit, 0, "events list / models audit: how many (0: 100).");

namespace fedge::cli {
namespace {

void PrintVersionLine(const v1::Version& v) {
  std::cout << v.model() << " v" << v.version()
            << (v.aliases_size() ? absl::StrCat(" [", absl::StrJoin(v.aliases(), ","), "]") : "")
            << (v.archived() ? " (archived)" : "") << "\n";
}

void PrintDeployment(const v1::Deployment& d) {
  std::cout << d.id() << ": " << d.model() << " v" << d.version() << ", "
            << v1::DeploymentState_Name(d.state()) << ", wave " << d.current_wave() << "/"
            << d.strategy().waves_size() << " - " << d.status_message() << "\n";
  absl::PrintF("  %-16s %-5s %-12s %-10s %-10s %8s %8s %10s %s\n", "NODE", "WAVE", "STATE",
               "ACTIVE", "PREVIOUS", "PREDICTS", "ERRORS", "FB_ACC", "MESSAGE");
  for (const auto& n : d.nodes()) {
    const auto& h = n.health();
    absl::PrintF(
        "  %-16s %-5d %-12s %-10s %-10s %8d %8d %10s %s\n", n.node_id(), n.wave(), n.state(),
        n.has_active() ? absl::StrCat("v", n.active().version()) : "-",
        n.has_previous() ? absl::StrCat("v", n.previous().version()) : "-", h.predictions(),
        h.errors(),
        h.feedback() > 0
            ? absl::StrFormat("%.3f", static_cast<double>(h.feedback_correct()) / h.feedback())
            : "-",
        n.message());
  }
}

bool Terminal(const v1::Deployment& d) {
  return d.state() == v1::DEPLOYMENT_SUCCEEDED || d.state() == v1::DEPLOYMENT_ROLLED_BACK ||
         d.state() == v1::DEPLOYMENT_FAILED;
}

int WatchDeployment(const std::string& id) {
  std::string last;
  while (true) {
    v1::GetDeploymentRequest req;
    req.set_id(id);
    v1::Deployment d;
    if (!CallAdmin("deploy status", &Admin::Stub::GetDeployment, req, &d)) return kFailed;
    const std::string line =
        absl::StrCat(v1::DeploymentState_Name(d.state()), " wave ", d.current_wave(), "/",
                     d.strategy().waves_size(), ": ", d.status_message());
    if (line != last) {
      std::cout << line << std::endl;
      last = line;
    }
    if (Terminal(d)) {
      if (Json()) PrintJson(d);
      return d.state() == v1::DEPLOYMENT_SUCCEEDED ? kOk : kFailed;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

}  // namespace

int ModelsLineage(const std::string& model) {
  v1::GetVersionRequest req;
  req.set_model(model);
  req.set_version(absl::GetFlag(FLAGS_version));
  v1::Lineage lineage;
  if (!CallAdmin("models lineage", &Admin::Stub::GetLineage, req, &lineage)) return kFailed;
  if (Json()) return PrintJson(lineage), kOk;
  const v1::Version& v = lineage.version();
  std::cout << v.model() << " v" << v.version() << " (" << v.strategy() << ", sha256 "
            << v.sha256().substr(0, 12) << ")\n";
  for (const auto& a : lineage.ancestors()) {
    std::cout << "  <- v" << a.version() << " (" << a.reason() << ")\n";
  }
  if (lineage.has_job()) {
    const v1::Job& j = lineage.job();
    std::cout << "job " << j.id() << " by " << j.creator() << ": " << j.completed_rounds()
              << " rounds, lr " << j.spec().learning_rate() << ", " << j.spec().local_epochs()
              << " local epoch(s)\n";
    for (const auto& r : j.rounds()) {
      absl::PrintF("  round %2d %-11s %d node(s) %6d samples val_acc %.4f %s\n", r.round(),
                   r.state(), r.participants(), r.samples(), r.val_accuracy(), r.reason());
    }
  }
  for (const auto& p : v.participants()) {
    std::cout << "participant " << p.node_id() << ": " << p.num_samples()
              << " samples per round\n";
  }
  for (const auto& [k, val] : v.metrics()) std::cout << "metric " << k << " = " << val << "\n";
  return kOk;
}

int ModelsPromote(const std::string& model) {
  v1::PromoteRequest req;
  req.set_model(model);
  req.set_version(absl::GetFlag(FLAGS_version));
  if (req.version() <= 0) return Usage("models promote needs --version=V");
  req.set_alias(absl::GetFlag(FLAGS_alias));
  req.set_force(absl::GetFlag(FLAGS_force));
  req.set_reason(absl::GetFlag(FLAGS_reason));
  v1::Version v;
  if (!CallAdmin("models promote", &Admin::Stub::Promote, req, &v)) return kFailed;
  if (Json()) return PrintJson(v), kOk;
  std::cout << "promoted ";
  PrintVersionLine(v);
  return kOk;
}

int ModelsAlias(const std::string& model) {
  const std::string alias = absl::GetFlag(FLAGS_alias);
  if (alias.empty()) return Usage("models alias needs --alias=NAME");
  if (absl::GetFlag(FLAGS_delete_alias)) {
    v1::DeleteAliasRequest req;
    req.set_model(model);
    req.set_alias(alias);
    req.set_reason(absl::GetFlag(FLAGS_reason));
    v1::Model m;
    if (!CallAdmin("models alias", &Admin::Stub::DeleteAlias, req, &m)) return kFailed;
    if (Json()) return PrintJson(m), kOk;
    std::cout << "deleted alias " << alias << " of " << model << "\n";
    return kOk;
  }
  v1::SetAliasRequest req;
  req.set_model(model);
  req.set_alias(alias);
  req.set_version(absl::GetFlag(FLAGS_version));
  if (req.version() <= 0) return Usage("models alias needs --version=V (or --delete_alias)");
  req.set_reason(absl::GetFlag(FLAGS_reason));
  v1::Version v;
  if (!CallAdmin("models alias", &Admin::Stub::SetAlias, req, &v)) return kFailed;
  if (Json()) return PrintJson(v), kOk;
  PrintVersionLine(v);
  return kOk;
}

int ModelsTag(const std::string& model) {
  v1::SetTagsRequest req;
  req.set_model(model);
  req.set_version(absl::GetFlag(FLAGS_version));
  if (req.version() <= 0) return Usage("models tag needs --version=V");
  for (const std::string& kv : SplitList(absl::GetFlag(FLAGS_tags))) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty()) return Usage(absl::StrCat("--tags entry '", kv, "' is not key=value"));
    (*req.mutable_tags())[p.first] = p.second;
  }
  if (req.tags().empty()) return Usage("models tag needs --tags=key=value,...");
  req.set_reason(absl::GetFlag(FLAGS_reason));
  v1::Version v;
  if (!CallAdmin("models tag", &Admin::Stub::SetTags, req, &v)) return kFailed;
  if (Json()) return PrintJson(v), kOk;
  std::vector<std::string> tags;
  for (const auto& [k, val] : v.tags()) tags.push_back(absl::StrCat(k, "=", val));
  std::cout << v.model() << " v" << v.version() << " tags: " << absl::StrJoin(tags, ",") << "\n";
  return kOk;
}

namespace {

// True if any gate-policy flag is given.
bool GateFlagsGiven() {
  return absl::GetFlag(FLAGS_min_accuracy) >= 0 || absl::GetFlag(FLAGS_max_loss) >= 0 ||
         absl::GetFlag(FLAGS_max_regression) >= 0 || absl::GetFlag(FLAGS_holdout_synthetic) ||
         absl::GetFlag(FLAGS_federated) || !absl::GetFlag(FLAGS_holdout_csv).empty();
}

// The gate policy the flags give; false (after printing why) if they name no data.
bool GateFromFlags(v1::GatePolicy* p) {
  {
    if (absl::GetFlag(FLAGS_min_accuracy) >= 0)
      p->set_min_accuracy(absl::GetFlag(FLAGS_min_accuracy));
    if (absl::GetFlag(FLAGS_max_loss) >= 0) p->set_max_loss(absl::GetFlag(FLAGS_max_loss));
    if (absl::GetFlag(FLAGS_max_regression) >= 0) {
      p->set_max_regression(absl::GetFlag(FLAGS_max_regression));
    }
    if (!absl::GetFlag(FLAGS_holdout_csv).empty()) {
      p->mutable_holdout()->set_csv_path(absl::GetFlag(FLAGS_holdout_csv));
      p->mutable_holdout()->set_label_column(absl::GetFlag(FLAGS_label_column));
    } else if (absl::GetFlag(FLAGS_holdout_synthetic)) {
      auto* syn = p->mutable_holdout()->mutable_synthetic();
      syn->set_seed(absl::GetFlag(FLAGS_synthetic_seed));
      syn->set_num_sites(absl::GetFlag(FLAGS_synthetic_sites));
      syn->set_window(absl::GetFlag(FLAGS_synthetic_window));
    } else if (!absl::GetFlag(FLAGS_federated)) {
      Usage(
          "a gate policy needs holdout data: --holdout_synthetic, --holdout_csv=PATH or "
          "--federated");
      return false;
    }
    p->set_federated(absl::GetFlag(FLAGS_federated));
    p->set_federated_min_nodes(absl::GetFlag(FLAGS_federated_min_nodes));
  }
  return true;
}

}  // namespace

int ModelsPolicy(const std::string& model) {
  v1::UpdateModelRequest req;
  req.set_name(model);
  req.set_reason(absl::GetFlag(FLAGS_reason));
  if (!absl::GetFlag(FLAGS_description).empty()) {
    req.set_description(absl::GetFlag(FLAGS_description));
  }
  if (absl::GetFlag(FLAGS_keep_versions) >= 0) {
    req.set_keep_versions(absl::GetFlag(FLAGS_keep_versions));
  }
  if (GateFlagsGiven() && !GateFromFlags(req.mutable_gate_policy())) return kUsage;
  v1::Model m;
  if (!CallAdmin("models policy", &Admin::Stub::UpdateModel, req, &m)) return kFailed;
  if (Json()) return PrintJson(m), kOk;
  std::cout << m.name() << ": keep_versions=" << m.keep_versions();
  const auto& p = m.gate_policy();
  if (p.has_min_accuracy()) std::cout << " min_accuracy=" << p.min_accuracy();
  if (p.has_max_loss()) std::cout << " max_loss=" << p.max_loss();
  if (p.has_max_regression()) std::cout << " max_regression=" << p.max_regression();
  std::cout << "\n";
  return kOk;
}

int ModelsValidate(const std::string& model) {
  v1::ValidateVersionRequest req;
  req.set_model(model);
  req.set_version(absl::GetFlag(FLAGS_version));
  req.set_reason(absl::GetFlag(FLAGS_reason));
  // Gate flags validate against that policy this once, instead of the model's.
  if (GateFlagsGiven() && !GateFromFlags(req.mutable_policy())) return kUsage;
  v1::Version v;
  if (!CallAdmin("models validate", &Admin::Stub::ValidateVersion, req, &v)) return kFailed;
  if (Json()) return PrintJson(v), v.validation().passed() ? kOk : kFailed;
  const auto& val = v.validation();
  std::cout << v.model() << " v" << v.version() << ": " << (val.passed() ? "PASSED" : "FAILED")
            << absl::StrFormat(" accuracy %.4f loss %.4f on %d samples (%s)", val.accuracy(),
                               val.loss(), val.samples(), val.source());
  if (val.federated_nodes() > 0) {
    std::cout << absl::StrFormat("; edges: accuracy %.4f on %d samples from %d node(s)",
                                 val.federated_accuracy(), val.federated_samples(),
                                 val.federated_nodes());
  }
  if (val.production_version() != 0) {
    std::cout << absl::StrFormat("; production v%d: %.4f", val.production_version(),
                                 val.production_accuracy());
  }
  if (!val.passed()) std::cout << "\n  " << val.reason();
  std::cout << "\n";
  return val.passed() ? kOk : kFailed;
}

int ModelsRetention(const std::string& model) {
  v1::ApplyRetentionRequest req;
  req.set_model(model);
  req.set_keep_versions(std::max(0, absl::GetFlag(FLAGS_keep_versions)));
  req.set_reason(absl::GetFlag(FLAGS_reason));
  v1::ApplyRetentionResponse resp;
  if (!CallAdmin("models retention", &Admin::Stub::ApplyRetention, req, &resp)) return kFailed;
  if (Json()) return PrintJson(resp), kOk;
  std::cout << "archived: "
            << (resp.archived().empty() ? "none" : absl::StrJoin(resp.archived(), ","))
            << "\nkept: " << absl::StrJoin(resp.kept(), ",") << "\n";
  return kOk;
}

int ModelsAudit(const std::string& model) {
  v1::ListAuditRequest req;
  req.set_model(model);
  req.set_limit(absl::GetFlag(FLAGS_limit));
  v1::ListAuditResponse resp;
  if (!CallAdmin("models audit", &Admin::Stub::ListAudit, req, &resp)) return kFailed;
  if (Json()) return PrintJson(resp), kOk;
  absl::PrintF("%-6s %-20s %-10s %-16s %-14s %-8s %s\n", "ID", "TIME", "WHO", "ACTION", "MODEL",
               "VERSION", "REASON / DETAIL");
  for (const auto& e : resp.entries()) {
    absl::PrintF("%-6d %-20s %-10s %-16s %-14s %-8s %s%s\n", e.id(), Time(e.time_unix_ms()),
                 e.principal(), e.action(), e.model(),
                 e.version() ? absl::StrCat("v", e.version()) : "-", e.reason(),
                 e.detail().empty() ? "" : absl::StrCat(" [", e.detail(), "]"));
  }
  return kOk;
}

// The rollout strategy the deploy flags describe; false (after printing why) if malformed.
bool StrategyFromFlags(v1::RolloutStrategy* s) {
  for (const std::string& w : SplitList(absl::GetFlag(FLAGS_waves))) {
    double f = 0;
    if (!absl::SimpleAtod(w, &f)) {
      Usage(absl::StrCat("--waves entry '", w, "' is not a number"));
      return false;
    }
    s->add_waves(f);
  }
  s->set_soak_ms(absl::GetFlag(FLAGS_soak_ms));
  s->set_wave_timeout_ms(absl::GetFlag(FLAGS_wave_timeout_ms));
  s->mutable_gate()->set_min_feedback_accuracy(absl::GetFlag(FLAGS_min_feedback_accuracy));
  s->mutable_gate()->set_min_feedback(absl::GetFlag(FLAGS_min_feedback));
  s->mutable_gate()->set_max_error_rate(absl::GetFlag(FLAGS_max_error_rate));
  s->mutable_gate()->set_max_p99_latency_ms(absl::GetFlag(FLAGS_max_p99_ms));
  return true;
}

void FillStrategy(v1::JobSpec* spec) {
  v1::AggregationSpec* a = spec->mutable_aggregation();
  a->set_rule(absl::GetFlag(FLAGS_aggregation));
  if (a->rule() == "trimmed_mean") a->set_trim_fraction(absl::GetFlag(FLAGS_trim_fraction));
  a->set_byzantine(absl::GetFlag(FLAGS_byzantine));
  a->set_multi_krum(absl::GetFlag(FLAGS_multi_krum));
  a->set_clip_norm(absl::GetFlag(FLAGS_clip_norm));
  a->set_max_update_norm(absl::GetFlag(FLAGS_max_update_norm));
  a->set_over_norm(absl::GetFlag(FLAGS_over_norm));
  a->set_server_optimizer(absl::GetFlag(FLAGS_server_optimizer));
  if (a->server_optimizer() != "none") {
    a->set_server_lr(absl::GetFlag(FLAGS_server_lr));
    a->set_beta1(absl::GetFlag(FLAGS_server_beta1));
    a->set_beta2(absl::GetFlag(FLAGS_server_beta2));
    a->set_tau(absl::GetFlag(FLAGS_server_tau));
  }
  v1::SelectionSpec* sel = spec->mutable_selection();
  sel->set_fraction(absl::GetFlag(FLAGS_fraction));
  sel->set_cohort(absl::GetFlag(FLAGS_cohort));
  sel->set_min_cpu_cores(absl::GetFlag(FLAGS_min_cpu_cores));
  sel->set_min_memory_mb(absl::GetFlag(FLAGS_min_memory_mb));
  sel->set_over_selection(absl::GetFlag(FLAGS_over_selection));
  sel->set_accept_partial_work(absl::GetFlag(FLAGS_accept_partial_work));
  v1::CompressionSpec* c = spec->mutable_compression();
  c->set_encoding(absl::GetFlag(FLAGS_compression));
  c->set_topk_fraction(absl::GetFlag(FLAGS_topk_fraction));
  c->set_block_size(absl::GetFlag(FLAGS_block_size));
  if (absl::GetFlag(FLAGS_async)) {
    v1::AsyncSpec* as = spec->mutable_async();
    as->set_enabled(true);
    as->set_buffer_size(absl::GetFlag(FLAGS_buffer_size));
    as->set_concurrency(absl::GetFlag(FLAGS_concurrency));
    as->set_staleness_exponent(absl::GetFlag(FLAGS_staleness_exponent));
    as->set_max_staleness(absl::GetFlag(FLAGS_max_staleness));
  }
}

int ModelsRetrainPolicy(const std::string& model) {
  v1::SetRetrainPolicyRequest req;
  req.set_model(model);
  req.set_reason(absl::GetFlag(FLAGS_reason));
  v1::RetrainPolicy* p = req.mutable_policy();
  p->set_enabled(absl::GetFlag(FLAGS_enable));
  p->set_drift_quorum_nodes(absl::GetFlag(FLAGS_drift_quorum_nodes));
  p->set_drift_quorum_fraction(absl::GetFlag(FLAGS_drift_quorum_fraction));
  p->set_drift_window_ms(absl::GetFlag(FLAGS_drift_window_ms));
  p->set_schedule_ms(absl::GetFlag(FLAGS_schedule_ms));
  p->set_min_new_samples(absl::GetFlag(FLAGS_min_new_samples));
  p->set_cooldown_ms(absl::GetFlag(FLAGS_cooldown_ms));
  v1::JobSpec* job = p->mutable_job();
  job->set_rounds(absl::GetFlag(FLAGS_rounds));
  job->set_clients_per_round(absl::GetFlag(FLAGS_clients_per_round));
  job->set_min_clients(absl::GetFlag(FLAGS_min_clients));
  job->set_round_timeout_ms(absl::GetFlag(FLAGS_round_timeout_ms));
  job->set_learning_rate(absl::GetFlag(FLAGS_lr));
  job->set_local_epochs(absl::GetFlag(FLAGS_epochs));
  job->set_batch_size(absl::GetFlag(FLAGS_batch_size));
  job->set_optimizer(absl::GetFlag(FLAGS_optimizer));
  job->set_proximal_mu(absl::GetFlag(FLAGS_proximal_mu));
  job->set_momentum(absl::GetFlag(FLAGS_momentum));
  FillStrategy(job);
  if (absl::GetFlag(FLAGS_holdout_synthetic)) {
    job->mutable_holdout()->mutable_synthetic()->set_seed(absl::GetFlag(FLAGS_synthetic_seed));
    job->mutable_holdout()->mutable_synthetic()->set_num_sites(
        absl::GetFlag(FLAGS_synthetic_sites));
  } else if (!absl::GetFlag(FLAGS_holdout_csv).empty()) {
    job->mutable_holdout()->set_csv_path(absl::GetFlag(FLAGS_holdout_csv));
    job->mutable_holdout()->set_label_column(absl::GetFlag(FLAGS_label_column));
  }
  p->set_auto_deploy(absl::GetFlag(FLAGS_auto_deploy));
  if (!StrategyFromFlags(p->mutable_rollout())) return kUsage;
  v1::RetrainPolicy out;
  if (!CallAdmin("models retrain-policy", &Admin::Stub::SetRetrainPolicy, req, &out)) {
    return kFailed;
  }
  if (Json()) return PrintJson(out), kOk;
  std::cout << model << ": retraining " << (out.enabled() ? "enabled" : "disabled")
            << "; drift quorum " << out.drift_quorum_nodes() << " node(s)"
            << (out.drift_quorum_fraction() > 0
                    ? absl::StrCat(" or ", out.drift_quorum_fraction() * 100, "% of the fleet")
                    : "")
            << ", schedule " << (out.schedule_ms() ? absl::StrCat(out.schedule_ms(), " ms") : "off")
            << ", new samples "
            << (out.min_new_samples() ? absl::StrCat(out.min_new_samples()) : "off")
            << ", cooldown " << out.cooldown_ms() << " ms"
            << (out.auto_deploy() ? ", auto-deploy and promote" : "") << "\n";
  return kOk;
}

int ModelsRetrain(const std::string& model) {
  v1::TriggerRetrainRequest req;
  req.set_model(model);
  req.set_reason(absl::GetFlag(FLAGS_reason));
  v1::Job job;
  if (!CallAdmin("models retrain", &Admin::Stub::TriggerRetrain, req, &job)) return kFailed;
  if (Json()) return PrintJson(job), kOk;
  std::cout << "started " << job.id() << " (" << job.spec().trigger() << ")\n";
  return kOk;
}

int DeployCreate() {
  v1::CreateDeploymentRequest req;
  req.set_model(absl::GetFlag(FLAGS_model));
  if (req.model().empty()) return Usage("deploy create needs --model");
  req.set_version(absl::GetFlag(FLAGS_version));
  req.set_reason(absl::GetFlag(FLAGS_reason));
  req.set_allow_schema_change(absl::GetFlag(FLAGS_allow_schema_change));
  if (!ParseSelector(absl::GetFlag(FLAGS_selector), req.mutable_selector())) {
    return Usage("--selector must be key=value,...");
  }
  if (!StrategyFromFlags(req.mutable_strategy())) return kUsage;
  v1::Deployment d;
  if (!CallAdmin("deploy create", &Admin::Stub::CreateDeployment, req, &d)) return kFailed;
  if (absl::GetFlag(FLAGS_watch)) {
    std::cout << "deployment " << d.id() << " started" << std::endl;
    return WatchDeployment(d.id());
  }
  if (Json()) return PrintJson(d), kOk;
  std::cout << "deployment " << d.id() << " started: " << d.model() << " v" << d.version() << " to "
            << d.nodes_size() << " node(s) in " << d.strategy().waves_size() << " wave(s)\n";
  return kOk;
}

int DeployList() {
  v1::ListDeploymentsResponse resp;
  if (!CallAdminAllPages("deploy list", &Admin::Stub::ListDeployments, v1::ListDeploymentsRequest(),
                         &resp,
                         [](v1::ListDeploymentsResponse* r) { return r->mutable_deployments(); })) {
    return kFailed;
  }
  if (Json()) return PrintJson(resp), kOk;
  absl::PrintF("%-26s %-16s %-8s %-22s %-6s %-20s %s\n", "DEPLOYMENT", "MODEL", "VERSION", "STATE",
               "WAVE", "CREATED", "STATUS");
  for (const auto& d : resp.deployments()) {
    absl::PrintF("%-26s %-16s %-8s %-22s %-6s %-20s %s\n", d.id(), d.model(),
                 absl::StrCat("v", d.version()), v1::DeploymentState_Name(d.state()),
                 absl::StrCat(d.current_wave(), "/", d.strategy().waves_size()),
                 Time(d.created_unix_ms()), d.status_message());
  }
  return kOk;
}

int DeployStatus(const std::string& id) {
  if (absl::GetFlag(FLAGS_watch)) return WatchDeployment(id);
  v1::GetDeploymentRequest req;
  req.set_id(id);
  v1::Deployment d;
  if (!CallAdmin("deploy status", &Admin::Stub::GetDeployment, req, &d)) return kFailed;
  if (Json()) return PrintJson(d), kOk;
  PrintDeployment(d);
  return kOk;
}

int DeployAction(const std::string& action, const std::string& id) {
  v1::DeploymentActionRequest req;
  req.set_id(id);
  req.set_reason(absl::GetFlag(FLAGS_reason));
  v1::Deployment d;
  bool ok = false;
  if (action == "pause") {
    ok = CallAdmin("deploy pause", &Admin::Stub::PauseDeployment, req, &d);
  } else if (action == "resume") {
    ok = CallAdmin("deploy resume", &Admin::Stub::ResumeDeployment, req, &d);
  } else {
    ok = CallAdmin("deploy rollback", &Admin::Stub::RollbackDeployment, req, &d);
  }
  if (!ok) return kFailed;
  if (Json()) return PrintJson(d), kOk;
  std::cout << d.id() << ": " << v1::DeploymentState_Name(d.state()) << " - " << d.status_message()
            << "\n";
  return kOk;
}

int JobsCancel(const std::string& id) {
  v1::CancelJobRequest req;
  req.set_id(id);
  req.set_reason(absl::GetFlag(FLAGS_reason));
  v1::Job job;
  if (!CallAdmin("jobs cancel", &Admin::Stub::CancelJob, req, &job)) return kFailed;
  if (Json()) return PrintJson(job), kOk;
  std::cout << "cancelling " << id << " after its current step\n";
  return kOk;
}

int EventsDeliveries() {
  v1::ListWebhookDeliveriesRequest req;
  req.set_limit(absl::GetFlag(FLAGS_limit));
  v1::ListWebhookDeliveriesResponse resp;
  if (!CallAdmin("events deliveries", &Admin::Stub::ListWebhookDeliveries, req, &resp)) {
    return kFailed;
  }
  if (Json()) return PrintJson(resp), kOk;
  absl::PrintF("%-6s %-6s %-20s %-8s %-6s %-10s %s\n", "ID", "EVENT", "TIME", "ATTEMPT", "HTTP",
               "DELIVERED", "URL / ERROR");
  for (const auto& d : resp.deliveries()) {
    absl::PrintF("%-6d %-6d %-20s %-8d %-6d %-10s %s %s\n", d.id(), d.event_id(),
                 Time(d.time_unix_ms()), d.attempt(), d.http_status(), d.delivered() ? "yes" : "no",
                 d.url(), d.error());
  }
  return kOk;
}

int EventsWatch(bool follow) {
  v1::WatchEventsRequest req;
  req.set_after_id(absl::GetFlag(FLAGS_after_id));
  for (const auto& t : SplitList(absl::GetFlag(FLAGS_types))) req.add_types(t);
  req.set_limit(absl::GetFlag(FLAGS_limit));
  auto print = [](const v1::Event& e) {
    if (Json()) {  // one compact JSON object a line (NDJSON)
      std::string line;
      google::protobuf::util::JsonPrintOptions opt;
      opt.preserve_proto_field_names = true;
      (void)google::protobuf::util::MessageToJsonString(e, &line, opt);
      std::cout << line << std::endl;
      return;
    }
    std::vector<std::string> where;
    if (!e.model().empty()) {
      where.push_back(e.version() ? absl::StrCat(e.model(), ":v", e.version()) : e.model());
    }
    if (!e.job_id().empty()) where.push_back(e.job_id());
    if (!e.deployment_id().empty()) where.push_back(e.deployment_id());
    if (!e.node_id().empty()) where.push_back(e.node_id());
    if (e.round() > 0) where.push_back(absl::StrCat("round ", e.round()));
    std::cout << absl::StrFormat("%-6d %s %-24s %-40s %s", e.id(), Time(e.time_unix_ms()), e.type(),
                                 absl::StrJoin(where, " "), e.message())
              << std::endl;
  };
  if (!follow) {
    v1::ListEventsResponse resp;
    if (!CallAdmin("events list", &Admin::Stub::ListEvents, req, &resp)) return kFailed;
    if (Json()) return PrintJson(resp), kOk;
    for (const auto& e : resp.events()) print(e);
    return kOk;
  }
  auto stub = Stub();
  grpc::ClientContext ctx;  // no deadline: follows until interrupted
  AddCredentials(&ctx);
  auto reader = stub->WatchEvents(&ctx, req);
  v1::Event e;
  while (reader->Read(&e)) print(e);
  grpc::Status st = reader->Finish();
  return st.ok() ? kOk : FailRpc("events watch", st);
}

}  // namespace fedge::cli
