#include "cloud/models/validator.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
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
                                           const v1::Version& version,
                                           const data::Dataset& holdout) {
  FEDGE_ASSIGN_OR_RETURN(std::string archive, registry.ReadBlob(version.sha256()));
  FEDGE_ASSIGN_OR_RETURN(auto model, torchlib::Model::Load(archive));
  const auto& norm = version.contract().normalization();
  if (norm.mean_size() > 0 && !norm.in_module()) {
    FEDGE_RETURN_IF_ERROR(model->SetInputNormalization({norm.mean().begin(), norm.mean().end()},
                                                       {norm.std().begin(), norm.std().end()}));
  }
  return model->Evaluate(holdout);
}

std::string SourceOf(const v1::HoldoutSpec& spec) {
  if (spec.has_synthetic()) return "synthetic";
  return absl::StrCat("csv:", spec.csv_path());
}

}  // namespace

absl::StatusOr<v1::Validation> Validate(const registry::Registry& registry,
                                        const v1::Version& version,
                                        const v1::GatePolicy& policy) {
  if (!policy.holdout().has_synthetic() && policy.holdout().csv_path().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model ", version.model(),
        " has no gate policy with holdout data; set one (fedgectl models policy) or pass it"));
  }
  FEDGE_ASSIGN_OR_RETURN(data::Dataset holdout, LoadHoldout(policy.holdout(), version.contract()));
  if (holdout.num_features() != version.contract().feature_names_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "holdout has ", holdout.num_features(), " features; ", version.model(), " v",
        version.version(), " takes ", version.contract().feature_names_size()));
  }
  FEDGE_ASSIGN_OR_RETURN(torchlib::EvalResult eval, Score(registry, version, holdout));
  v1::Validation v;
  v.set_accuracy(eval.accuracy);
  v.set_loss(eval.loss);
  v.set_samples(eval.num_samples);
  v.set_source(SourceOf(policy.holdout()));
  v.set_validated_unix_ms(absl::ToUnixMillis(absl::Now()));
  std::vector<std::string> failed;
  if (policy.has_min_accuracy() && eval.accuracy < policy.min_accuracy()) {
    failed.push_back(
        absl::StrFormat("accuracy %.4f < minimum %.4f", eval.accuracy, policy.min_accuracy()));
  }
  if (policy.has_max_loss() && eval.loss > policy.max_loss()) {
    failed.push_back(absl::StrFormat("loss %.4f > maximum %.4f", eval.loss, policy.max_loss()));
  }
  if (policy.has_max_regression()) {
    auto prod = registry.ResolveAlias(version.model(), "production");
    if (prod.ok() && *prod != version.version()) {
      auto prod_version = registry.GetVersion(version.model(), *prod);
      if (prod_version.ok() && !prod_version->archived()) {
        FEDGE_ASSIGN_OR_RETURN(torchlib::EvalResult base, Score(registry, *prod_version, holdout));
        v.set_production_version(*prod);
        v.set_production_accuracy(base.accuracy);
        if (eval.accuracy < base.accuracy - policy.max_regression()) {
          failed.push_back(absl::StrFormat(
              "accuracy %.4f is more than %.4f below production v%d (%.4f)", eval.accuracy,
              policy.max_regression(), *prod, base.accuracy));
        }
      }
    }
  }
  v.set_passed(failed.empty());
  v.set_reason(absl::StrJoin(failed, "; "));
  return v;
}

}  // namespace fedge::cloud::models
