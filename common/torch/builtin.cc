// Built-in architectures, compiled from TorchScript source so the default path needs no Python.

#include <ATen/CPUGeneratorImpl.h>
#include <torch/script.h>

#include <cmath>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/torch/internal.h"
#include "common/torch/model.h"

namespace fedge::torchlib {
namespace {

constexpr char kLinearSource[] = R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return torch.linear(x, self.weight, self.bias)
)JIT";

// Kernel 3 with padding 1 keeps the window length.
constexpr char kConv1dSource[] = R"JIT(
def forward(self, x: Tensor) -> Tensor:
    return torch.conv1d(x, self.weight, self.bias, [1], [1])
)JIT";

// torch.jit.script gives every module a `training` flag, and Python's nn.Module API expects
// it; a module built in C++ lacks it unless added (and Module::train() then silently does
// nothing).
void AddTrainingFlag(torch::jit::Module& m) {
  m.register_attribute("training", c10::BoolType::get(), true);
}

// Builds layer modules in one compilation unit. All Linear layers share one class type (and so
// one compiled forward), as do all Conv1d layers.
class LayerFactory {
 public:
  explicit LayerFactory(uint64_t seed)
      : cu_(std::make_shared<torch::jit::CompilationUnit>()),
        generator_(at::detail::createCPUGenerator(seed)) {}

  const std::shared_ptr<torch::jit::CompilationUnit>& cu() const { return cu_; }

  torch::jit::Module Linear(int64_t in, int64_t out) {
    torch::jit::Module m = New("Linear", kLinearSource, &linear_type_);
    m.register_parameter("weight", Uniform({out, in}, in), /*is_buffer=*/false);
    m.register_parameter("bias", Uniform({out}, in), /*is_buffer=*/false);
    return m;
  }

  torch::jit::Module Conv1d(int64_t in_channels, int64_t out_channels, int64_t kernel) {
    torch::jit::Module m = New("Conv1d", kConv1dSource, &conv_type_);
    const int64_t fan_in = in_channels * kernel;
    m.register_parameter("weight", Uniform({out_channels, in_channels, kernel}, fan_in),
                         /*is_buffer=*/false);
    m.register_parameter("bias", Uniform({out_channels}, fan_in), /*is_buffer=*/false);
    return m;
  }

 private:
  // The first module of a kind creates the class and compiles its forward; later ones are new
  // instances of that class.
  torch::jit::Module New(const std::string& kind, const char* source, c10::ClassTypePtr* type) {
    if (*type) {
      torch::jit::Module m(cu_, *type);
      AddTrainingFlag(m);
      return m;
    }
    torch::jit::Module m(c10::QualifiedName(absl::StrCat("__torch__.fedge.", kind)), cu_);
    AddTrainingFlag(m);
    // define() needs the attributes the source uses to exist on the class first.
    m.register_parameter("weight", at::empty({0}), /*is_buffer=*/false);
    m.register_parameter("bias", at::empty({0}), /*is_buffer=*/false);
    m.define(source);
    *type = m.type();
    return m;
  }

  // PyTorch's default layer init (kaiming_uniform_ with a = sqrt(5)): U(-b, b), b = 1/sqrt(fan_in).
  at::Tensor Uniform(std::vector<int64_t> shape, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    return at::rand(shape, generator_, at::kFloat).mul_(2 * bound).sub_(bound);
  }

  std::shared_ptr<torch::jit::CompilationUnit> cu_;
  at::Generator generator_;
  c10::ClassTypePtr linear_type_;
  c10::ClassTypePtr conv_type_;
};

absl::Status Validate(const BuiltinOptions& o) {
  if (o.architecture != "mlp" && o.architecture != "conv1d") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown built-in architecture '", o.architecture, "' (want mlp or conv1d)"));
  }
  if (o.num_features <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_features is ", o.num_features));
  }
  if (o.num_classes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_classes is ", o.num_classes));
  }
  for (int h : o.hidden) {
    if (h <= 0) return absl::InvalidArgumentError(absl::StrCat("hidden width ", h, " <= 0"));
  }
  if (o.architecture == "conv1d") {
    if (o.hidden.size() != 2) {
      return absl::InvalidArgumentError("conv1d needs hidden = {conv channels, dense width}");
    }
    if (o.window <= 0 || o.num_features % o.window != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("conv1d window ", o.window, " does not divide num_features ", o.num_features,
                       " (features are channels * window, channel-major)"));
    }
  }
  if (o.norm_mean.size() != o.norm_std.size()) {
    return absl::InvalidArgumentError(absl::StrCat("norm_mean has ", o.norm_mean.size(),
                                                   " values but norm_std has ", o.norm_std.size()));
  }
  if (!o.norm_mean.empty() && static_cast<int64_t>(o.norm_mean.size()) != o.num_features) {
    return absl::InvalidArgumentError(absl::StrCat("normalization has ", o.norm_mean.size(),
                                                   " values; num_features is ", o.num_features));
  }
  for (size_t i = 0; i < o.norm_std.size(); ++i) {
    if (!std::isfinite(o.norm_mean[i]) || !std::isfinite(o.norm_std[i]) || o.norm_std[i] <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("normalization of feature ", i, " has mean ",
                                                     o.norm_mean[i], " and std ", o.norm_std[i],
                                                     "; need finite values and std > 0"));
    }
  }
  return absl::OkStatus();
}

at::Tensor Vector(const std::vector<float>& v) {
  return at::from_blob(const_cast<float*>(v.data()), {static_cast<int64_t>(v.size())}, at::kFloat)
      .clone();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Builtin(const BuiltinOptions& options) {
  if (absl::Status s = Validate(options); !s.ok()) return s;
  try {
    LayerFactory layers(options.seed);
    const bool mlp = options.architecture == "mlp";
    torch::jit::Module top(
        c10::QualifiedName(mlp ? "__torch__.fedge.Mlp" : "__torch__.fedge.Conv1dNet"), layers.cu());
    AddTrainingFlag(top);
    // Submodules are called as self.name.forward(x): without Python's frontend, define()
    // treats self as a plain object, and self.name(x) fails looking for __call__.
    std::string src = "def forward(self, x: Tensor) -> Tensor:\n";
    if (!options.norm_mean.empty()) {
      // Plain tensor attributes: saved in the archive, but neither parameters nor buffers, so
      // they stay out of the flat schema and federated averaging never touches them.
      top.register_attribute("norm_mean", c10::TensorType::get(), Vector(options.norm_mean),
                             /*is_param=*/false, /*is_buffer=*/false);
      top.register_attribute("norm_std", c10::TensorType::get(), Vector(options.norm_std),
                             /*is_param=*/false, /*is_buffer=*/false);
      absl::StrAppend(&src, "    x = (x - self.norm_mean) / self.norm_std\n");
    }
    int64_t width = options.num_features;
    if (mlp) {
      for (size_t i = 0; i < options.hidden.size(); ++i) {
        const std::string name = absl::StrCat("fc", i + 1);
        top.register_module(name, layers.Linear(width, options.hidden[i]));
        absl::StrAppend(&src, "    x = torch.relu(self.", name, ".forward(x))\n");
        width = options.hidden[i];
      }
    } else {
      const int64_t channels = options.num_features / options.window;
      const int64_t conv = options.hidden[0];
      top.register_module("conv1", layers.Conv1d(channels, conv, 3));
      top.register_module("conv2", layers.Conv1d(conv, conv, 3));
      top.register_module("fc1", layers.Linear(conv, options.hidden[1]));
      absl::StrAppend(&src, "    x = x.reshape([x.size(0), ", channels, ", ", options.window,
                      "])\n", "    x = torch.relu(self.conv1.forward(x))\n",
                      "    x = torch.relu(self.conv2.forward(x))\n", "    x = torch.mean(x, [2])\n",
                      "    x = torch.relu(self.fc1.forward(x))\n");
      width = options.hidden[1];
    }
    top.register_module("out", layers.Linear(width, options.num_classes));
    absl::StrAppend(&src, "    return self.out.forward(x)\n");
    top.define(src);
    return Impl::Adopt(std::move(top), ExtraFiles{});
  } catch (const c10::Error& e) {
    return FromTorchError(absl::StatusCode::kInternal, "building built-in model", e);
  } catch (const std::exception& e) {
    // TorchScript compile errors (torch::jit::ErrorReport) are not c10::Errors.
    return absl::InternalError(absl::StrCat("compiling built-in model: ", e.what()));
  }
}

}  // namespace fedge::torchlib
