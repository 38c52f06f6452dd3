#ifndef FEDGE_CLOUD_MODELS_MODEL_PROBE_H_
#define FEDGE_CLOUD_MODELS_MODEL_PROBE_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/torch/model.h"

namespace fedge::cloud::models {

// The shape rule of every registered model: a forward pass on a [1, features] input gives a
// [1, labels] output. INVALID_ARGUMENT says which side is wrong. Shared by intake (in process)
// and the fedge-model-check helper (in its sandbox), so both refuse exactly the same modules.
absl::Status CheckModelShape(const torchlib::Model& model, int64_t features, int64_t labels);

// Loads a user's torch.jit.save archive and checks its shape. INVALID_ARGUMENT if the bytes are
// not a usable TorchScript module or the shape is wrong.
absl::StatusOr<std::unique_ptr<torchlib::Model>> LoadAndCheckArchive(absl::string_view archive,
                                                                     int64_t features,
                                                                     int64_t labels);

}  // namespace fedge::cloud::models

#endif  // FEDGE_CLOUD_MODELS_MODEL_PROBE_H_
