#ifndef FEDGE_COMMON_TENSOR_F32_H_
#define FEDGE_COMMON_TENSOR_F32_H_

// A single-pass check for the hot paths over F32 updates (one update can be hundreds of MB).

#include <cstdint>

#include "absl/types/span.h"

namespace fedge {

// True iff no value is NaN or ±Inf. Branch-free over blocks so that the compiler vectorizes
// it; callers that need to name the bad element scan again only when this is false.
bool AllFinite(absl::Span<const float> values);

}  // namespace fedge

#endif  // FEDGE_COMMON_TENSOR_F32_H_
