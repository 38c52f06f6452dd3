#include "cloud/models/intake.h"

#include "absl/strings/str_cat.h"
#include "cloud/models/contract.h"
#include "cloud/models/model_probe.h"
#include "cloud/models/sandbox.h"
#include "common/status/quote.h"
#include "common/status/status.h"
#include "common/torch/model.h"

namespace fedge::cloud::models {

namespace {

absl::Status CheckName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 128;
  for (size_t i = 0; ok && i < name.size(); ++i) {
    char c = name[i];
    ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (i > 0 && (c == '.' || c == '_' || c == '-'));
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model name ", Quote(name), " is invalid: use 1-128 characters [A-Za-z0-9._-]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Intake> BuildVersion(const v1::RegisterModelHeader& header,
                                    absl::string_view user_archive,
                                    const SandboxLimits& model_check) {
  FEDGE_RETURN_IF_ERROR(CheckName(header.name()));
  v1::ModelContract contract = header.contract();
  if (contract.task().empty()) contract.set_task("classification");
  if (contract.loss().empty()) contract.set_loss("cross_entropy");
  if (contract.task() != "classification") {
    return absl::InvalidArgumentError(absl::StrCat(
        "task ", Quote(contract.task()), " is not supported yet; fedge v1 trains classifiers"));
  }
  std::unique_ptr<torchlib::Model> model;
  const bool builtin = !header.builtin().architecture().empty();
  if (builtin && !user_archive.empty()) {
    return absl::InvalidArgumentError("give either a built-in architecture or an archive, not both");
  }
  if (builtin) {
    contract.set_architecture(header.builtin().architecture());
    if (contract.architecture() == "conv1d" && contract.window() == 0) {
      return absl::InvalidArgumentError("conv1d needs the contract's window (time steps)");
    }
    FEDGE_RETURN_IF_ERROR(CheckContract(contract));
    torchlib::BuiltinOptions opt;
    opt.architecture = contract.architecture();
    opt.num_features = contract.feature_names_size();
    opt.num_classes = contract.labels_size();
    if (header.builtin().hidden_size() > 0) {
      opt.hidden.assign(header.builtin().hidden().begin(), header.builtin().hidden().end());
    } else if (opt.architecture == "conv1d") {
      opt.hidden = {16, 32};
    }
    opt.window = contract.window();
    opt.norm_mean.assign(contract.normalization().mean().begin(),
                         contract.normalization().mean().end());
    opt.norm_std.assign(contract.normalization().std().begin(),
                        contract.normalization().std().end());
    opt.seed = header.builtin().seed();
    contract.mutable_normalization()->set_in_module(!opt.norm_mean.empty());
    FEDGE_ASSIGN_OR_RETURN(model, torchlib::Model::Builtin(opt));
  } else {
    if (user_archive.empty()) {
      return absl::InvalidArgumentError(
          "no model given: name a built-in architecture or send a torch.jit.save archive");
    }
    // Always "user", whatever the contract says: it is what keeps this model's code out of the
    // coordinator's process (ScoreModel).
    contract.set_architecture(kUserArchitecture);
    FEDGE_RETURN_IF_ERROR(CheckContract(contract));
    // LibTorch's loader checks no CRC and trusts the archive's code: only an archive that
    // loaded and ran in the helper process is loaded here, and only to be re-saved with its
    // contract; its forward runs in the helper alone.
    FEDGE_RETURN_IF_ERROR(CheckArchiveInSandbox(user_archive, header.archive_sha256(),
                                                contract.feature_names_size(),
                                                contract.labels_size(), model_check));
    FEDGE_ASSIGN_OR_RETURN(model, torchlib::Model::Load(user_archive));
    if (contract.normalization().mean_size() > 0 && !contract.normalization().in_module()) {
      FEDGE_RETURN_IF_ERROR(model->SetInputNormalization(
          {contract.normalization().mean().begin(), contract.normalization().mean().end()},
          {contract.normalization().std().begin(), contract.normalization().std().end()}));
    }
  }
  // A built-in module must map [1, features] to [1, labels]; a user's archive was tried in the
  // helper.
  if (builtin) {
    FEDGE_RETURN_IF_ERROR(
        CheckModelShape(*model, contract.feature_names_size(), contract.labels_size()));
  }
  model->SetExtraFile(torchlib::kContractFile, ContractToJson(contract));
  Intake out;
  FEDGE_ASSIGN_OR_RETURN(out.archive, model->Serialize());
  out.version.set_model(header.name());
  *out.version.mutable_schema() = model->schema().ToProto();
  out.version.set_schema_hash(model->schema().Hash());
  *out.version.mutable_contract() = contract;
  out.version.set_reason(header.reason().empty() ? "registered" : header.reason());
  return out;
}

}  // namespace fedge::cloud::models
