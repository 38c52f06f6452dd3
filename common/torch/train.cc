// Model::Train: mini-batch fine-tuning with cross-entropy.

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/script.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status.h"
#include "common/torch/internal.h"
#include "common/torch/model.h"

#if AT_PARALLEL_OPENMP
#include <omp.h>
#endif

namespace fedge::torchlib {
namespace {

// Sets the calling thread's intra-op threads for a scope. at::set_num_threads would also
// change the process-wide default that every thread takes on its first parallel operation
// (gRPC starts threads at any time), so serving threads could end up with the training cap.
// With LibTorch's OpenMP backend a thread's parallel regions use that thread's own OpenMP
// setting, and only that is changed here. Other backends keep the process setting.
class ScopedThreads {
 public:
  explicit ScopedThreads(int threads) {
#if AT_PARALLEL_OPENMP
    if (threads <= 0) return;
    previous_ = at::get_num_threads();  // first applies the process default to a new thread
    if (previous_ != threads) omp_set_num_threads(threads);
#endif
  }
  ~ScopedThreads() {
#if AT_PARALLEL_OPENMP
    if (previous_ > 0) omp_set_num_threads(previous_);
#endif
  }
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int previous_ = 0;
};

absl::Status ValidateOptions(const TrainOptions& o) {
  if (!std::isfinite(o.proximal_mu) || o.proximal_mu < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("proximal_mu is ", o.proximal_mu, "; it must be finite and >= 0"));
  }
  if (o.optimizer != "sgd" && o.optimizer != "adam") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown optimizer '", o.optimizer, "' (want sgd or adam)"));
  }
  if (!std::isfinite(o.momentum) || o.momentum < 0 || o.momentum >= 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("momentum is ", o.momentum, "; it must be in [0, 1)"));
  }
  if (!std::isfinite(o.learning_rate) || o.learning_rate <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("learning rate must be positive, got ", o.learning_rate));
  }
  if (o.epochs < 1) return absl::InvalidArgumentError(absl::StrCat("epochs is ", o.epochs));
  if (o.threads < 0) return absl::InvalidArgumentError(absl::StrCat("threads is ", o.threads));
  if (o.batch_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("batch_size is ", o.batch_size));
  }
  return absl::OkStatus();
}

void ClearGrads(const torch::jit::Module& module) {
  for (at::Tensor p : module.parameters()) p.mutable_grad() = at::Tensor();
}

}  // namespace

absl::StatusOr<TrainResult> Model::Train(const data::Dataset& data, const TrainOptions& options) {
  FEDGE_RETURN_IF_ERROR(ValidateOptions(options));
  FEDGE_RETURN_IF_ERROR(Impl::CheckDataset(data, "train on"));
  ScopedThreads threads(options.threads);
  const auto start = std::chrono::steady_clock::now();
  Impl& impl = *impl_;
  torch::jit::Module& module = impl.module;
  const int64_t n = data.size();
  const int64_t width = data.num_features();

  // The optimizer setting is per thread. Off, the interpreter runs the graph as written, which
  // for small models trains faster than the profiling executor's specializations.
  torch::jit::GraphOptimizerEnabledGuard no_graph_optimizer(false);
  torch::AutoGradMode grad_mode(true);

  // Keep the weights so that a failed run leaves the model as it was.
  const FlatTensor before = Flat();
  TrainResult result;
  result.num_samples = n;
  absl::Status status = [&]() -> absl::Status {
    try {
      at::Tensor x =
          at::from_blob(const_cast<float*>(data.features.data()), {n, width}, at::kFloat).clone();
      at::Tensor y =
          at::from_blob(const_cast<int64_t*>(data.labels.data()), {n}, at::kLong).clone();
      FEDGE_ASSIGN_OR_RETURN(x, impl.Normalize(x));

      // One eval-mode row up front checks the feature count and tells the output width, before
      // any weight changes.
      int64_t num_classes = 0;
      {
        torch::NoGradGuard no_grad;
        FEDGE_ASSIGN_OR_RETURN(at::Tensor probe, impl.Run(x.slice(0, 0, 1)));
        num_classes = probe.size(1);
      }
      const int64_t max_label = y.max().item<int64_t>();
      if (max_label >= num_classes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "label ", max_label, " is out of range: the model outputs ", num_classes, " classes"));
      }

      std::vector<at::Tensor> params;
      std::vector<at::Tensor> anchors;  // w0 for the proximal term
      for (at::Tensor p : module.parameters()) {
        p.requires_grad_(true);
        params.push_back(p);
        if (options.proximal_mu > 0) anchors.push_back(p.detach().clone());
      }
      std::unique_ptr<torch::optim::Optimizer> optimizer;
      if (options.optimizer == "adam") {
        optimizer = std::make_unique<torch::optim::Adam>(
            params, torch::optim::AdamOptions(options.learning_rate));
      } else {
        optimizer = std::make_unique<torch::optim::SGD>(
            params, torch::optim::SGDOptions(options.learning_rate).momentum(options.momentum));
      }

      at::Generator generator = at::detail::createCPUGenerator(options.seed);
      module.train(true);
      const int64_t batch = options.batch_size;
      for (int epoch = 0; epoch < options.epochs; ++epoch) {
        at::Tensor order = at::randperm(n, generator, at::kLong);
        double loss_sum = 0;
        for (int64_t begin = 0, end = 0, b = 0; begin < n; begin = end, ++b) {
          end = std::min(n, begin + batch);
          // A lone last sample joins the batch before it: BatchNorm cannot train on one row.
          if (n - end == 1 && end > begin + 1) end = n;
          at::Tensor idx = order.slice(0, begin, end);
          at::Tensor xb = x.index_select(0, idx);
          at::Tensor yb = y.index_select(0, idx);
          optimizer->zero_grad();
          FEDGE_ASSIGN_OR_RETURN(at::Tensor logits, impl.Run(xb));
          at::Tensor loss = at::cross_entropy_loss(logits, yb);
          const double value = loss.item<double>();
          if (!std::isfinite(value)) {
            return absl::InternalError(
                absl::StrCat("training diverged: loss is ", std::isnan(value) ? "NaN" : "infinite",
                             " at epoch ", epoch, ", batch ", b, "; lower the learning rate"));
          }
          loss.backward();
          if (options.proximal_mu > 0) {
            // The gradient of mu/2 * ||w - w0||^2 is mu * (w - w0): added to the gradients
            // directly, which is exact and, for small models, far cheaper than putting the
            // term into the autograd graph (that tripled the step time of a 610-parameter
            // logistic regression).
            torch::NoGradGuard no_grad;
            for (size_t i = 0; i < params.size(); ++i) {
              at::Tensor pull = (params[i] - anchors[i]).mul_(options.proximal_mu);
              at::Tensor& grad = params[i].mutable_grad();
              if (grad.defined()) {
                grad.add_(pull);
              } else {
                grad = pull;  // a parameter the forward pass does not use
              }
            }
          }
          optimizer->step();
          if (options.between_batches) options.between_batches();
          loss_sum += value * static_cast<double>(idx.size(0));
        }
        result.train_loss = loss_sum / static_cast<double>(n);
        result.epochs = epoch + 1;
        if (epoch + 1 < options.epochs && options.continue_after_epoch &&
            !options.continue_after_epoch(epoch + 1)) {
          break;
        }
      }
      return absl::OkStatus();
    } catch (const std::exception& e) {
      // c10::Error, or torch::jit::JITException from inside the interpreter.
      return absl::InternalError(absl::StrCat("training: ", TorchErrorSummary(e)));
    }
  }();

  module.eval();
  ClearGrads(module);
  if (!status.ok()) {
    absl::Status restored = SetFlat(before);
    (void)restored;  // Same schema and size, so it cannot fail.
    return status;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace fedge::torchlib
