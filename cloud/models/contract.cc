#include "cloud/models/contract.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"

namespace fedge::cloud::models {

std::string ContractToJson(const v1::ModelContract& contract) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(contract, &json, options);
  return json;
}

absl::StatusOr<v1::ModelContract> ContractFromJson(absl::string_view json) {
  v1::ModelContract contract;
  auto st = google::protobuf::util::JsonStringToMessage(std::string(json), &contract);
  if (!st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model contract is not valid JSON: ", st.message().as_string()));
  }
  return contract;
}

absl::Status CheckContract(const v1::ModelContract& c) {
  if (c.feature_names_size() == 0) {
    return absl::InvalidArgumentError(
        "the contract names no features: give the feature names in input order");
  }
  if (c.labels_size() < 2) {
    return absl::InvalidArgumentError(
        "the contract needs at least 2 labels (the class names in output order)");
  }
  const auto& n = c.normalization();
  if (n.mean_size() != n.std_size() ||
      (n.mean_size() != 0 && n.mean_size() != c.feature_names_size())) {
    return absl::InvalidArgumentError(absl::StrCat("normalization has ", n.mean_size(),
                                                   " means and ", n.std_size(), " stds for ",
                                                   c.feature_names_size(), " features"));
  }
  // A NaN or infinite mean or std would turn every input of that feature into NaN or 0.
  for (int i = 0; i < n.mean_size(); ++i) {
    if (!std::isfinite(n.mean(i))) {
      return absl::InvalidArgumentError(
          absl::StrCat("normalization mean ", i, " is ", n.mean(i), ": means must be finite"));
    }
  }
  for (int i = 0; i < n.std_size(); ++i) {
    if (!(n.std(i) > 0) || !std::isfinite(n.std(i))) {
      return absl::InvalidArgumentError(absl::StrCat("normalization std ", i, " is ", n.std(i),
                                                     ": std values must be finite and > 0"));
    }
  }
  if (c.window() < 0 || (c.window() > 0 && c.feature_names_size() % c.window() != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("window ", c.window(), " does not divide ",
                                                   c.feature_names_size(), " features"));
  }
  return absl::OkStatus();
}

}  // namespace fedge::cloud::models
