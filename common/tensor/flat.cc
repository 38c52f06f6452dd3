#include "common/tensor/flat.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/tensor/f32.h"
#include "common/tensor/sha256.h"

namespace fedge {

int64_t TensorSpec::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t Schema::NumElements() const {
  int64_t n = 0;
  for (const auto& t : tensors) n += t.NumElements();
  return n;
}

std::string Schema::Hash() const {
  std::string text;
  for (const auto& t : tensors) {
    absl::StrAppend(&text, t.name, ":", t.dtype, ":", absl::StrJoin(t.shape, ","), "\n");
  }
  return Sha256Hex(text);
}

v1::Schema Schema::ToProto() const {
  v1::Schema proto;
  for (const auto& t : tensors) {
    auto* spec = proto.add_tensors();
    spec->set_name(t.name);
    spec->set_dtype(t.dtype);
    for (int64_t d : t.shape) spec->add_shape(d);
  }
  proto.set_hash(Hash());
  return proto;
}

Schema Schema::FromProto(const v1::Schema& proto) {
  Schema schema;
  for (const auto& spec : proto.tensors()) {
    schema.tensors.push_back(
        TensorSpec{spec.name(), {spec.shape().begin(), spec.shape().end()}, spec.dtype()});
  }
  return schema;
}

static_assert(sizeof(float) == 4, "F32 encoding needs 4-byte floats");

std::string EncodeF32(absl::Span<const float> values) {
  // x86-64 and aarch64 are little-endian, which is the wire order.
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

absl::StatusOr<FlatTensor> DecodeF32(absl::string_view bytes, int64_t expected_elements) {
  const int64_t expected_bytes = expected_elements * static_cast<int64_t>(sizeof(float));
  if (static_cast<int64_t>(bytes.size()) != expected_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("f32 payload has ", bytes.size(), " bytes; the schema needs ",
                     expected_bytes, " (", expected_elements, " float32 values)"));
  }
  FlatTensor out(static_cast<size_t>(expected_elements));
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

absl::Status CheckFinite(absl::Span<const float> values, const Schema& schema) {
  if (AllFinite(values)) return absl::OkStatus();
  size_t offset = 0;
  for (const auto& t : schema.tensors) {
    const size_t n = static_cast<size_t>(t.NumElements());
    for (size_t i = 0; i < n && offset + i < values.size(); ++i) {
      if (!std::isfinite(values[offset + i])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "update holds a non-finite value (", values[offset + i], ") in tensor '", t.name,
            "' at element ", i, "; the edge's training diverged"));
      }
    }
    offset += n;
  }
  for (size_t i = offset; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(absl::StrCat("non-finite value at element ", i));
    }
  }
  return absl::OkStatus();
}

double L2Norm(absl::Span<const float> values) {
  double sum = 0;
  for (float v : values) sum += static_cast<double>(v) * v;
  return std::sqrt(sum);
}

}  // namespace fedge
