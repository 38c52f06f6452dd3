#ifndef FEDGE_COMMON_TORCH_MODEL_H_
#define FEDGE_COMMON_TORCH_MODEL_H_

// The torch-free face of fedge's LibTorch code. Nothing outside common/torch includes a torch
// header; everything else sees models through this interface.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/data/dataset.h"
#include "common/tensor/flat.h"

namespace fedge::torchlib {

// Files stored beside the module in the archive (torch's "extra files").
using ExtraFiles = std::map<std::string, std::string>;

// The extra file that holds a version's model contract (protobuf JSON of fedge.v1.ModelContract).
inline constexpr char kContractFile[] = "fedge_contract.json";

struct BuiltinOptions {
  std::string architecture = "mlp";  // "mlp" or "conv1d"
  int64_t num_features = 0;          // conv1d: channels * window
  int64_t num_classes = 0;
  // mlp hidden widths (none: one Linear layer, multinomial logistic regression); conv1d:
  // {conv channels, dense width}.
  std::vector<int> hidden = {64, 32};
  int window = 0;  // conv1d: time steps per channel
  // Normalization baked into the module as non-trainable attributes (not in the flat schema).
  // Empty: identity.
  std::vector<float> norm_mean;
  std::vector<float> norm_std;
  uint64_t seed = 0;
};

struct TrainOptions {
  std::string optimizer = "sgd";  // "sgd" (with `momentum`) or "adam"
  double learning_rate = 0.05;
  // SGD's momentum, in [0, 1); 0 is plain SGD (w -= lr * grad), the local solver of FedAvg and
  // FedProx as published. Ignored by adam.
  double momentum = 0.9;
  int epochs = 1;
  int batch_size = 32;
  uint64_t seed = 0;
  // FedProx's proximal term: mu/2 * ||w - w0||^2 joins each batch's loss (its gradient,
  // mu * (w - w0), is added to each step's), w0 the trainable parameters as the call starts.
  // train_loss still reports the cross-entropy alone.
  double proximal_mu = 0;
  // Intra-op threads for this call (0: the calling thread's current setting). Applies to the
  // calling thread alone and is restored on return: other threads, and threads started later,
  // keep the process-wide SetNumThreads value.
  int threads = 0;
  // Runs on the training thread after each optimizer step, e.g. to pace a CPU cap.
  std::function<void()> between_batches;
  // Runs after each epoch but the last, with the epochs done so far; false stops training
  // there (partial work, e.g. to meet a deadline). The result counts the epochs run.
  std::function<bool(int epochs_done)> continue_after_epoch;
};

struct TrainResult {
  double train_loss = 0;  // mean cross-entropy over the last epoch
  int64_t num_samples = 0;
  int epochs = 0;  // epochs run: fewer than asked if continue_after_epoch stopped them
  double seconds = 0;
};

struct EvalResult {
  double accuracy = 0;
  double loss = 0;  // mean cross-entropy
  int64_t num_samples = 0;
};

struct Prediction {
  int64_t label = 0;
  std::vector<float> scores;  // raw module outputs
  std::vector<float> probabilities;
};

// A TorchScript classifier: input [N, num_features] float32, output [N, num_classes] logits.
// Predict and Evaluate are const and may run concurrently; Train and SetFlat mutate and must
// not overlap with any other call. Serve from one instance and train on a Clone().
class Model {
 public:
  // Loads an archive (a torch.jit.save file). INVALID_ARGUMENT if it is not TorchScript, has
  // no trainable parameters, or holds a non-float32 parameter or float buffer.
  static absl::StatusOr<std::unique_ptr<Model>> Load(absl::string_view archive);
  static absl::StatusOr<std::unique_ptr<Model>> LoadFile(const std::string& path);
  // Builds a built-in architecture by compiling TorchScript source; no Python involved.
  static absl::StatusOr<std::unique_ptr<Model>> Builtin(const BuiltinOptions& options);

  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Parameters then float buffers, in the module's named order.
  const Schema& schema() const;

  const ExtraFiles& extra_files() const;
  void SetExtraFile(const std::string& name, std::string content);

  // Applied to inputs before the module (for models without normalization in the module).
  // Empty vectors: identity. INVALID_ARGUMENT on a size mismatch.
  absl::Status SetInputNormalization(std::vector<float> mean, std::vector<float> std);

  // The archive bytes. Deterministic: equal weights and extra files give equal bytes.
  absl::StatusOr<std::string> Serialize() const;

  FlatTensor Flat() const;
  // INVALID_ARGUMENT unless values has schema().NumElements() elements.
  absl::Status SetFlat(absl::Span<const float> values);

  // A deep copy (module, extra files, normalization).
  absl::StatusOr<std::unique_ptr<Model>> Clone() const;

  // Fine-tunes this instance in place with cross-entropy.
  absl::StatusOr<TrainResult> Train(const data::Dataset& data, const TrainOptions& options);

  // rows holds N * num_features values.
  absl::StatusOr<std::vector<Prediction>> Predict(absl::Span<const float> rows,
                                                  int64_t num_features) const;
  absl::StatusOr<EvalResult> Evaluate(const data::Dataset& data) const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Intra-op threads for this process (tests and small gateways use 1): the calling thread's, and
// the default of every thread that has not run a parallel operation yet.
void SetNumThreads(int threads);
// The calling thread's intra-op threads.
int NumThreads();

}  // namespace fedge::torchlib

#endif  // FEDGE_COMMON_TORCH_MODEL_H_
