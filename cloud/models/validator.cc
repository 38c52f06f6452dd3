#include "cloud/models/validator.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "cloud/evaluation/federated.h"
#include "cloud/models/contract.h"
#include "common/data/synthetic.h"
#include "common/status/status.h"
#include "common/torch/model.h"

namespace fedge::cloud::models {

absl::StatusOr<data::Dataset> LoadHoldout(const v1::HoldoutSpec& spec,
                                          const v1::ModelContract& contract) {
  if (spec.has_synthetic()) {
    const auto& s = spec.synthetic();
    data::SyntheticOptions opt;
    if (s.num_sites() > 0) opt.num_sites = s.num_sites();
    opt.seed = s.seed();
    opt.drift = s.drift();
    opt.window = s.window();
    return data::GenerateHoldout(opt, s.samples_per_site() > 0 ? s.samples_per_site() : 2000);
  }
  if (!spec.csv_path().empty()) {
    data::CsvOptions opt;
    if (!spec.label_column().empty()) opt.label_column = spec.label_column();
    opt.label_names.assign(contract.labels().begin(), contract.labels().end());
    return data::ReadCsv(spec.csv_path(), opt);
  }
  return data::Dataset{};
}

namespace {

absl::StatusOr<torchlib::EvalResult> Score(const registry::Registry& registry,
                                           const v1::Version& version, const data::Dataset& holdout,
                                           const SandboxLimits& model_check) {
  FEDGE_ASSIGN_OR_RETURN(std::string archive, registry.ReadBlob(version.sha256()));
  FEDGE_ASSIGN_OR_RETURN(auto model, torchlib::Model::Load(archive));
  const auto& norm = version.contract().normalization();
  if (norm.mean_size() > 0 && !norm.in_module()) {
    FEDGE_RETURN_IF_ERROR(model->SetInputNormalization({norm.mean().begin(), norm.mean().end()},
                                                       {norm.std().begin(), norm.std().end()}));
  }
  return ScoreModel(*model, version.contract(), holdout, model_check);
}

// The holdout as the helper reads it: feature columns f0..fN-1, then "label".
std::string HoldoutCsv(const data::Dataset& holdout) {
  const int64_t width = holdout.num_features();
  std::string csv;
  for (int64_t f = 0; f < width; ++f) absl::StrAppend(&csv, "f", f, ",");
  csv += "label\n";
  for (int64_t r = 0; r < holdout.size(); ++r) {
    for (int64_t f = 0; f < width; ++f) {
      absl::StrAppend(&csv, absl::StrFormat("%.9g", holdout.features[r * width + f]), ",");
    }
    absl::StrAppend(&csv, holdout.labels[r], "\n");
  }
  return csv;
}

std::string SourceOf(const v1::HoldoutSpec& spec) {
  if (spec.has_synthetic()) return "synthetic";
  return absl::StrCat("csv:", spec.csv_path());
}

}  // namespace

absl::StatusOr<torchlib::EvalResult> ScoreModel(const torchlib::Model& model,
                                                const v1::ModelContract& contract,
                                                const data::Dataset& holdout,
                                                const SandboxLimits& model_check) {
  if (contract.architecture() != kUserArchitecture) return model.Evaluate(holdout);
  FEDGE_ASSIGN_OR_RETURN(std::string archive, model.Serialize());
  FEDGE_ASSIGN_OR_RETURN(SandboxScore score,
                         EvaluateArchiveInSandbox(archive, HoldoutCsv(holdout),
                                                  static_cast<int>(holdout.num_features()),
                                                  contract.labels_size(), model_check));
  torchlib::EvalResult result;
  result.accuracy = score.accuracy;
  result.loss = score.loss;
  result.num_samples = score.num_samples;
  return result;
}

absl::StatusOr<v1::Validation> Validate(const registry::Registry& registry,
                                        const v1::Version& version, const v1::GatePolicy& policy,
                                        const SandboxLimits& model_check,
                                        evaluation::FederatedEvaluator* federated) {
  const bool cloud = policy.holdout().has_synthetic() || !policy.holdout().csv_path().empty();
  if (!cloud && !policy.federated()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model ", version.model(),
        " has no gate policy with holdout data; set one (fedgectl models policy) or pass it"));
  }
  v1::Validation v;
  v.set_validated_unix_ms(absl::ToUnixMillis(absl::Now()));
  std::vector<std::string> failed;
  auto check = [&](const std::string& where, double accuracy, double loss) {
    if (policy.has_min_accuracy() && accuracy < policy.min_accuracy()) {
      failed.push_back(absl::StrFormat("%saccuracy %.4f < minimum %.4f", where, accuracy,
                                       policy.min_accuracy()));
    }
    if (policy.has_max_loss() && loss > policy.max_loss()) {
      failed.push_back(
          absl::StrFormat("%sloss %.4f > maximum %.4f", where, loss, policy.max_loss()));
    }
  };
  if (cloud) {
    FEDGE_ASSIGN_OR_RETURN(data::Dataset holdout,
                           LoadHoldout(policy.holdout(), version.contract()));
    if (holdout.num_features() != version.contract().feature_names_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("holdout has ", holdout.num_features(), " features; ", version.model(), " v",
                       version.version(), " takes ", version.contract().feature_names_size()));
    }
    FEDGE_ASSIGN_OR_RETURN(torchlib::EvalResult eval,
                           Score(registry, version, holdout, model_check));
    v.set_accuracy(eval.accuracy);
    v.set_loss(eval.loss);
    v.set_samples(eval.num_samples);
    v.set_source(SourceOf(policy.holdout()));
    check("", eval.accuracy, eval.loss);
    if (policy.has_max_regression()) {
      auto prod = registry.ResolveAlias(version.model(), "production");
      if (prod.ok() && *prod != version.version()) {
        auto prod_version = registry.GetVersion(version.model(), *prod);
        if (prod_version.ok() && !prod_version->archived()) {
          FEDGE_ASSIGN_OR_RETURN(torchlib::EvalResult base,
                                 Score(registry, *prod_version, holdout, model_check));
          v.set_production_version(*prod);
          v.set_production_accuracy(base.accuracy);
          if (eval.accuracy < base.accuracy - policy.max_regression()) {
            failed.push_back(
                absl::StrFormat("accuracy %.4f is more than %.4f below production v%d (%.4f)",
                                eval.accuracy, policy.max_regression(), *prod, base.accuracy));
          }
        }
      }
    }
  }
  if (policy.federated()) {
    if (federated == nullptr) {
      return absl::FailedPreconditionError("federated evaluation is not available here");
    }
    v1::VersionRef ref;
    ref.set_model(version.model());
    ref.set_version(version.version());
    ref.set_sha256(version.sha256());
    const absl::Duration timeout = absl::Milliseconds(
        policy.federated_timeout_ms() > 0 ? policy.federated_timeout_ms() : 60000);
    FEDGE_ASSIGN_OR_RETURN(auto fed, federated->Evaluate(ref, version.schema_hash(),
                                                         policy.federated_min_nodes(), timeout));
    v.set_federated_accuracy(fed.accuracy);
    v.set_federated_loss(fed.loss);
    v.set_federated_samples(fed.samples);
    v.set_federated_nodes(fed.nodes);
    v.set_source(v.source().empty() ? "federated" : absl::StrCat(v.source(), "+federated"));
    check("federated ", fed.accuracy, fed.loss);
  }
  v.set_passed(failed.empty());
  v.set_reason(absl::StrJoin(failed, "; "));
  return v;
}

}  // namespace fedge::cloud::models
