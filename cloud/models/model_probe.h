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

// Runs the model the way the coordinator and the edges will, on seeded random data: predictions
// at batch sizes 2, 32, 256 and 1024 (the evaluation chunk), each [N, features] in and
// [N, labels] out; an evaluation over two chunks; and one epoch of training on a copy, in
// batches of 32. INVALID_ARGUMENT naming the step that failed. A module that misbehaves only
// on inputs these do not reach still passes: the coordinator runs user code only in the helper.
absl::Status TryModelAsUsed(const torchlib::Model& model, int64_t features, int64_t labels);

// Loads a user's torch.jit.save archive and checks its shape. INVALID_ARGUMENT if the bytes are
// not a usable TorchScript module or the shape is wrong.
absl::StatusOr<std::unique_ptr<torchlib::Model>> LoadAndCheckArchive(absl::string_view archive,
                                                                     int64_t features,
                                                                     int64_t labels);

}  // namespace fedge::cloud::models

#endif  // FEDGE_CLOUD_MODELS_MODEL_PROBE_H_
