#include "cloud/models/model_probe.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status.h"

namespace fedge::cloud::models {

absl::Status CheckModelShape(const torchlib::Model& model, int64_t features, int64_t labels) {
  std::vector<float> zeros(static_cast<size_t>(features), 0.0f);
  auto probe = model.Predict(zeros, features);
  if (!probe.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model does not accept ", features,
                     " features as the contract says: ", probe.status().message()));
  }
  if (static_cast<int64_t>((*probe)[0].scores.size()) != labels) {
    return absl::InvalidArgumentError(absl::StrCat("the model outputs ", (*probe)[0].scores.size(),
                                                   " scores but the contract has ", labels,
                                                   " labels"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<torchlib::Model>> LoadAndCheckArchive(absl::string_view archive,
                                                                     int64_t features,
                                                                     int64_t labels) {
  std::unique_ptr<torchlib::Model> model;
  FEDGE_ASSIGN_OR_RETURN(model, torchlib::Model::Load(archive));
  FEDGE_RETURN_IF_ERROR(CheckModelShape(*model, features, labels));
  return model;
}

}  // namespace fedge::cloud::models
