#ifndef FEDGE_CLOUD_MODELS_CONTRACT_H_
#define FEDGE_CLOUD_MODELS_CONTRACT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fedge/v1/model.pb.h"

namespace fedge::cloud::models {

// The contract's architecture of every model registered from a user's archive (set at intake,
// whatever the request said). Such a model's code runs only in fedge-model-check on the
// coordinator.
inline constexpr char kUserArchitecture[] = "user";

// The contract as stored inside archives (protobuf JSON), and back. ContractFromJson refuses
// anything that is not a ModelContract in protobuf JSON with INVALID_ARGUMENT.
std::string ContractToJson(const v1::ModelContract& contract);
absl::StatusOr<v1::ModelContract> ContractFromJson(absl::string_view json);

// The checks a contract passes before a model is built for it: feature names given, at least 2
// labels, one finite normalization mean and one finite std > 0 per feature or none, and a window
// that divides the features. INVALID_ARGUMENT says what is wrong. Needs no model, so no torch.
absl::Status CheckContract(const v1::ModelContract& contract);

}  // namespace fedge::cloud::models

#endif  // FEDGE_CLOUD_MODELS_CONTRACT_H_
