#ifndef FEDGE_COMMON_TENSOR_F32_H_
#define FEDGE_COMMON_TENSOR_F32_H_

// Single-pass helpers for the cloud's hot path over F32 update payloads (one update can be
// hundreds of MB, and the coordinator folds thousands of them).

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tensor/flat.h"

namespace fedge {

// True iff no value is NaN or ±Inf. Branch-free over blocks so that the compiler vectorizes
// it; callers that need to name the bad element scan again only when this is false.
bool AllFinite(absl::Span<const float> values);

// The F32 payload `bytes` as floats. When `bytes` is 4-byte aligned (a heap buffer always is)
// the result views `bytes` itself, without a copy; otherwise the values are decoded into
// *scratch and the result views *scratch. The result is valid while both live. Fails as
// DecodeF32 does: INVALID_ARGUMENT unless the size is exactly expected_elements * 4.
absl::StatusOr<absl::Span<const float>> ViewF32(absl::string_view bytes, int64_t expected_elements,
                                                FlatTensor* scratch);

}  // namespace fedge

#endif  // FEDGE_COMMON_TENSOR_F32_H_
