#ifndef FEDGE_COMMON_TORCH_INTERNAL_H_
#define FEDGE_COMMON_TORCH_INTERNAL_H_

// Private to common/torch: the torch-side state behind Model. Never include from outside.

#include <torch/script.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/torch/model.h"

namespace fedge::torchlib {

struct Model::Impl {
  // Invariants (kept by Adopt and every mutator): in eval mode; parameters require grad and
  // have no .grad; the schema describes named_parameters() then float named_buffers().
  torch::jit::Module module;
  Schema schema;
  ExtraFiles extra_files;
  std::vector<float> input_mean;  // empty or one per feature
  std::vector<float> input_std;

  // Validates the module, derives its schema and wraps it. INVALID_ARGUMENT if the module has
  // no trainable parameters or a non-float32 parameter or float buffer.
  static absl::StatusOr<std::unique_ptr<Model>> Adopt(torch::jit::Module module,
                                                      ExtraFiles extra_files);
  static Impl& Of(Model& model) { return *model.impl_; }
  static const Impl& Of(const Model& model) { return *model.impl_; }

  // The schema's tensors, in schema order (parameters, then float buffers).
  std::vector<at::Tensor> SchemaTensors() const;

  // Applies the input normalization (if any) to [n, num_features] rows; INVALID_ARGUMENT if
  // its width differs. Returns rows itself when there is none.
  absl::StatusOr<at::Tensor> Normalize(const at::Tensor& rows) const;
  // Runs the module on already-normalized rows. The caller holds the grad mode it wants.
  // INVALID_ARGUMENT if the module rejects the input or does not return [n, k] logits.
  absl::StatusOr<at::Tensor> Run(const at::Tensor& input) const;
  // Normalize, then Run.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& rows) const;

  // Checks a dataset's shape; INVALID_ARGUMENT naming what is wrong.
  static absl::Status CheckDataset(const data::Dataset& data, absl::string_view what);
};

// Turns a c10::Error into a status carrying the message without torch's C++ backtrace.
absl::Status FromTorchError(absl::StatusCode code, absl::string_view context, const c10::Error& e);

// The last line of a torch exception's message (without C++ or TorchScript backtrace), which
// is the one that names the failing operation.
std::string TorchErrorSummary(const std::exception& e);

}  // namespace fedge::torchlib

#endif  // FEDGE_COMMON_TORCH_INTERNAL_H_
