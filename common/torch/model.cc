#include "common/torch/model.h"

#include <ATen/Parallel.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <torch/script.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status/status.h"
#include "common/torch/internal.h"

namespace fedge::torchlib {
namespace {

// Rows per forward call in Predict and Evaluate, to bound activation memory.
constexpr int64_t kChunkRows = 1024;

// Where torch keeps extra files inside an archive (relative to the archive's root folder).
constexpr char kExtraPrefix[] = "extra/";

// Serves an archive held in memory. Unlike caffe2's MemoryReadAdapter it owns its bytes and
// never reads past the end, whatever offset a malformed zip directory asks for.
class StringReadAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit StringReadAdapter(std::string bytes) : bytes_(std::move(bytes)) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* what = "") const override {
    if (pos >= bytes_.size()) return 0;
    n = std::min<uint64_t>(n, bytes_.size() - pos);
    std::memcpy(buf, bytes_.data() + pos, n);
    return n;
  }

 private:
  std::string bytes_;
};

std::string ShapeString(at::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) absl::StrAppend(&out, i ? ", " : "", sizes[i]);
  return absl::StrCat(out, "]");
}

}  // namespace

absl::Status FromTorchError(absl::StatusCode code, absl::string_view context, const c10::Error& e) {
  return absl::Status(code, absl::StrCat(context, ": ", e.what_without_backtrace()));
}

std::string TorchErrorSummary(const std::exception& e) {
  absl::string_view text;
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    text = c10_error->what_without_backtrace();
  } else {
    text = e.what();
  }
  text = absl::StripTrailingAsciiWhitespace(text);
  const size_t newline = text.rfind('\n');
  if (newline != absl::string_view::npos) text = text.substr(newline + 1);
  return std::string(absl::StripAsciiWhitespace(text));
}

// ---------------------------------------------------------------------------------------------
// Impl

absl::StatusOr<std::unique_ptr<Model>> Model::Impl::Adopt(torch::jit::Module module,
                                                          ExtraFiles extra_files) {
  auto impl = std::make_unique<Impl>();
  for (const auto& param : module.named_parameters(/*recurse=*/true)) {
    if (param.value.scalar_type() != at::kFloat) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter '", param.name, "' is ", c10::toString(param.value.scalar_type()),
          "; fedge needs float32 parameters (convert with model.float() before saving)"));
    }
    if (!param.value.device().is_cpu()) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter '", param.name, "' is not on the CPU"));
    }
    // Parameters of a define()d module start without requires_grad, and requires_grad is part
    // of the archive: one canonical value keeps Serialize() a function of the weights.
    param.value.requires_grad_(true);
    impl->schema.tensors.push_back(TensorSpec{param.name, param.value.sizes().vec(), "float32"});
  }
  if (impl->schema.tensors.empty()) {
    return absl::InvalidArgumentError(
        "model has no trainable parameters (nothing for federated training to update)");
  }
  for (const auto& buffer : module.named_buffers(/*recurse=*/true)) {
    // Integer buffers such as BatchNorm's num_batches_tracked are not averaged across nodes.
    if (!at::isFloatingType(buffer.value.scalar_type())) continue;
    if (buffer.value.scalar_type() != at::kFloat) {
      return absl::InvalidArgumentError(
          absl::StrCat("buffer '", buffer.name, "' is ", c10::toString(buffer.value.scalar_type()),
                       "; fedge needs float32 buffers (convert with model.float() before saving)"));
    }
    impl->schema.tensors.push_back(TensorSpec{buffer.name, buffer.value.sizes().vec(), "float32"});
  }
  // The mode is also part of the archive; serving and Serialize() always see eval mode.
  module.eval();
  impl->module = std::move(module);
  impl->extra_files = std::move(extra_files);
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

std::vector<at::Tensor> Model::Impl::SchemaTensors() const {
  std::vector<at::Tensor> out;
  out.reserve(schema.tensors.size());
  for (const auto& param : module.named_parameters(/*recurse=*/true)) out.push_back(param.value);
  for (const auto& buffer : module.named_buffers(/*recurse=*/true)) {
    if (at::isFloatingType(buffer.value.scalar_type())) out.push_back(buffer.value);
  }
  return out;
}

absl::StatusOr<at::Tensor> Model::Impl::Normalize(const at::Tensor& rows) const {
  if (input_mean.empty()) return rows;
  const int64_t width = rows.size(1);
  if (static_cast<int64_t>(input_mean.size()) != width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input has ", width, " features but the input normalization has ", input_mean.size()));
  }
  // from_blob does not copy; the vectors are only read.
  at::Tensor mean = at::from_blob(const_cast<float*>(input_mean.data()), {width}, at::kFloat);
  at::Tensor std = at::from_blob(const_cast<float*>(input_std.data()), {width}, at::kFloat);
  return (rows - mean) / std;
}

absl::StatusOr<at::Tensor> Model::Impl::Forward(const at::Tensor& rows) const {
  FEDGE_ASSIGN_OR_RETURN(at::Tensor input, Normalize(rows));
  return Run(input);
}

absl::StatusOr<at::Tensor> Model::Impl::Run(const at::Tensor& input) const {
  const int64_t n = input.size(0);
  at::Tensor logits;
  try {
    c10::IValue out = module.get_method("forward")({input});
    if (!out.isTensor()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model forward returned ", out.tagKind(), ", not a tensor of logits"));
    }
    logits = out.toTensor();
  } catch (const std::exception& e) {
    // Errors inside the TorchScript interpreter arrive as torch::jit::JITException (not a
    // c10::Error) carrying a TorchScript traceback; its last line names the failing op.
    return absl::InvalidArgumentError(
        absl::StrCat("model rejected input of shape ", ShapeString(input.sizes()),
                     " (is the feature count right?): ", TorchErrorSummary(e)));
  }
  if (logits.dim() != 2 || logits.size(0) != n || !at::isFloatingType(logits.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model output has shape ", ShapeString(logits.sizes()), " and type ",
        c10::toString(logits.scalar_type()), "; expected float logits [", n, ", num_classes]"));
  }
  if (logits.size(1) < 1) return absl::InvalidArgumentError("model outputs zero classes");
  return logits.scalar_type() == at::kFloat ? logits : logits.to(at::kFloat);
}

absl::Status Model::Impl::CheckDataset(const data::Dataset& data, absl::string_view what) {
  if (data.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("no samples to ", what));
  }
  if (data.num_features() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("dataset to ", what, " has no features"));
  }
  if (static_cast<int64_t>(data.features.size()) != data.size() * data.num_features()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset to ", what, " holds ", data.features.size(), " feature values; expected ",
        data.size(), " rows x ", data.num_features(), " features"));
  }
  for (int64_t i = 0; i < data.size(); ++i) {
    if (data.labels[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("dataset to ", what, ": row ", i, " has negative label ", data.labels[i]));
    }
  }
  for (size_t i = 0; i < data.features.size(); ++i) {
    if (!std::isfinite(data.features[i])) {
      const size_t column = i % data.num_features();
      return absl::InvalidArgumentError(
          absl::StrCat("dataset to ", what, ": row ", i / data.num_features(), " feature '",
                       data.feature_names[column], "' (", column, ") is ", data.features[i]));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Model

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

absl::StatusOr<std::unique_ptr<Model>> Model::Load(absl::string_view archive) {
  if (archive.empty()) return absl::InvalidArgumentError("model archive is empty");
  auto adapter = std::make_shared<StringReadAdapter>(std::string(archive));
  torch::jit::Module module;
  torch::jit::ExtraFilesMap extra_map;
  try {
    // torch::jit::load only fills the extra-file keys it is given, so list them first.
    caffe2::serialize::PyTorchStreamReader reader(adapter);
    for (const std::string& record : reader.getAllRecords()) {
      if (absl::StartsWith(record, kExtraPrefix)) {
        extra_map.emplace(record.substr(std::strlen(kExtraPrefix)), "");
      }
    }
    module = torch::jit::load(adapter, c10::Device(c10::kCPU), extra_map);
  } catch (const c10::Error& e) {
    return FromTorchError(absl::StatusCode::kInvalidArgument,
                          "not a TorchScript archive (save it with torch.jit.save)", e);
  } catch (const std::exception& e) {
    // TorchScript compile errors in the archive's code are not c10::Errors.
    return absl::InvalidArgumentError(absl::StrCat("cannot load TorchScript archive: ", e.what()));
  }
  ExtraFiles extra;
  for (auto& [name, content] : extra_map) extra.emplace(name, std::move(content));
  return Impl::Adopt(std::move(module), std::move(extra));
}

absl::StatusOr<std::unique_ptr<Model>> Model::LoadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot open model file ", path, ": ", std::strerror(errno)));
  }
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read model file ", path));
  auto model = Load(bytes);
  if (!model.ok()) return Annotate(model.status(), path);
  return model;
}

const Schema& Model::schema() const { return impl_->schema; }
const ExtraFiles& Model::extra_files() const { return impl_->extra_files; }

void Model::SetExtraFile(const std::string& name, std::string content) {
  impl_->extra_files[name] = std::move(content);
}

absl::Status Model::SetInputNormalization(std::vector<float> mean, std::vector<float> std) {
  if (mean.size() != std.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input normalization has ", mean.size(), " means but ", std.size(), " stds"));
  }
  for (size_t i = 0; i < std.size(); ++i) {
    if (!std::isfinite(mean[i]) || !std::isfinite(std[i]) || std[i] <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("input normalization for feature ", i,
                                                     " has mean ", mean[i], " and std ", std[i],
                                                     "; need finite values and std > 0"));
    }
  }
  impl_->input_mean = std::move(mean);
  impl_->input_std = std::move(std);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Model::Serialize() const {
  // save(path) records the file name in the archive; save(ostream) is byte-for-byte a function
  // of the module and the extra files.
  try {
    torch::jit::ExtraFilesMap extra(impl_->extra_files.begin(), impl_->extra_files.end());
    std::ostringstream out;
    impl_->module.save(out, extra);
    return std::move(out).str();
  } catch (const c10::Error& e) {
    return FromTorchError(absl::StatusCode::kInternal, "serializing model", e);
  }
}

FlatTensor Model::Flat() const {
  torch::NoGradGuard no_grad;
  FlatTensor out;
  out.reserve(impl_->schema.NumElements());
  for (const at::Tensor& t : impl_->SchemaTensors()) {
    at::Tensor c = t.contiguous();
    const float* p = c.data_ptr<float>();
    out.insert(out.end(), p, p + c.numel());
  }
  return out;
}

absl::Status Model::SetFlat(absl::Span<const float> values) {
  const int64_t expected = impl_->schema.NumElements();
  if (static_cast<int64_t>(values.size()) != expected) {
    return absl::InvalidArgumentError(absl::StrCat("flat weights have ", values.size(),
                                                   " values; the model's schema needs ", expected));
  }
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (at::Tensor& t : impl_->SchemaTensors()) {
    const int64_t n = t.numel();
    t.copy_(at::from_blob(const_cast<float*>(values.data() + offset), t.sizes(), at::kFloat));
    offset += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Model>> Model::Clone() const {
  // A round trip through the archive format (rather than Module::clone()) keeps the class
  // names unmangled, so a clone serializes to the same bytes as the original, and gives the
  // clone its own tensors.
  FEDGE_ASSIGN_OR_RETURN(std::string archive, Serialize());
  auto clone = Load(archive);
  if (!clone.ok()) {
    return absl::InternalError(absl::StrCat("cloning model: ", clone.status().message()));
  }
  Impl::Of(**clone).input_mean = impl_->input_mean;
  Impl::Of(**clone).input_std = impl_->input_std;
  return clone;
}

absl::StatusOr<std::vector<Prediction>> Model::Predict(absl::Span<const float> rows,
                                                       int64_t num_features) const {
  if (num_features <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_features is ", num_features));
  }
  if (rows.size() % num_features != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        rows.size(), " input values are not a whole number of rows of ", num_features));
  }
  const int64_t n = static_cast<int64_t>(rows.size()) / num_features;
  std::vector<Prediction> out;
  out.reserve(n);
  torch::NoGradGuard no_grad;
  for (int64_t begin = 0; begin < n; begin += kChunkRows) {
    const int64_t m = std::min(kChunkRows, n - begin);
    // A copy, so a module that writes into its input cannot touch the caller's const rows.
    at::Tensor chunk = at::from_blob(const_cast<float*>(rows.data() + begin * num_features),
                                     {m, num_features}, at::kFloat)
                           .clone();
    FEDGE_ASSIGN_OR_RETURN(at::Tensor logits, impl_->Forward(chunk));
    logits = logits.contiguous();
    at::Tensor probs = at::softmax(logits, 1).contiguous();
    at::Tensor labels = logits.argmax(1).contiguous();
    const int64_t k = logits.size(1);
    const float* lp = logits.data_ptr<float>();
    const float* pp = probs.data_ptr<float>();
    const int64_t* ap = labels.data_ptr<int64_t>();
    for (int64_t i = 0; i < m; ++i) {
      Prediction p;
      p.label = ap[i];
      p.scores.assign(lp + i * k, lp + (i + 1) * k);
      p.probabilities.assign(pp + i * k, pp + (i + 1) * k);
      out.push_back(std::move(p));
    }
  }
  return out;
}

absl::StatusOr<EvalResult> Model::Evaluate(const data::Dataset& data) const {
  FEDGE_RETURN_IF_ERROR(Impl::CheckDataset(data, "evaluate"));
  const int64_t n = data.size();
  const int64_t width = data.num_features();
  torch::NoGradGuard no_grad;
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t begin = 0; begin < n; begin += kChunkRows) {
    const int64_t m = std::min(kChunkRows, n - begin);
    at::Tensor chunk = at::from_blob(const_cast<float*>(data.features.data() + begin * width),
                                     {m, width}, at::kFloat)
                           .clone();
    at::Tensor labels =
        at::from_blob(const_cast<int64_t*>(data.labels.data() + begin), {m}, at::kLong).clone();
    FEDGE_ASSIGN_OR_RETURN(at::Tensor logits, impl_->Forward(chunk));
    const int64_t max_label = labels.max().item<int64_t>();
    if (max_label >= logits.size(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label ", max_label, " is out of range: the model outputs ", logits.size(1), " classes"));
    }
    loss_sum += at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum).item<double>();
    correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
  }
  EvalResult result;
  result.num_samples = n;
  result.loss = loss_sum / static_cast<double>(n);
  result.accuracy = static_cast<double>(correct) / static_cast<double>(n);
  return result;
}

void SetNumThreads(int threads) { at::set_num_threads(std::max(1, threads)); }

int NumThreads() { return at::get_num_threads(); }

}  // namespace fedge::torchlib
