#ifndef FEDGE_COMMON_TENSOR_FLAT_H_
#define FEDGE_COMMON_TENSOR_FLAT_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "fedge/v1/model.pb.h"

namespace fedge {

// One entry of a model's flat schema: a parameter or float buffer, in module order.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype = "float32";

  int64_t NumElements() const;
  bool operator==(const TensorSpec& o) const {
    return name == o.name && shape == o.shape && dtype == o.dtype;
  }
};

// The ordered tensors a flat vector covers. Two models can exchange updates iff their
// schema hashes are equal.
struct Schema {
  std::vector<TensorSpec> tensors;

  int64_t NumElements() const;
  // sha256 over a canonical text: one "name:dtype:d0,d1,...\n" line per tensor.
  std::string Hash() const;
  v1::Schema ToProto() const;
  static Schema FromProto(const v1::Schema& proto);
};

// A model's weights as one vector over its schema.
using FlatTensor = std::vector<float>;

// Encodes a flat vector as little-endian float32 bytes (the F32 wire encoding).
std::string EncodeF32(absl::Span<const float> values);
// Decodes F32 bytes; INVALID_ARGUMENT unless the size is exactly expected_elements * 4.
absl::StatusOr<FlatTensor> DecodeF32(absl::string_view bytes, int64_t expected_elements);

// INVALID_ARGUMENT naming the first non-finite element (and its tensor) if there is one.
absl::Status CheckFinite(absl::Span<const float> values, const Schema& schema);

// The L2 norm, accumulated in double.
double L2Norm(absl::Span<const float> values);

}  // namespace fedge

#endif  // FEDGE_COMMON_TENSOR_FLAT_H_
