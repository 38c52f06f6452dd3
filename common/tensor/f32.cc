#include "common/tensor/f32.h"

#include <algorithm>
#include <cstring>

namespace fedge {

bool AllFinite(absl::Span<const float> values) {
  // A float is NaN or infinite iff its exponent bits are all ones. The inner loop has no
  // early exit, so it vectorizes; blocks keep the exit close to a bad value.
  constexpr size_t kBlock = 4096;
  constexpr uint32_t kExponent = 0x7f800000u;
  const float* data = values.data();
  for (size_t start = 0; start < values.size(); start += kBlock) {
    const size_t end = std::min(values.size(), start + kBlock);
    uint32_t bad = 0;
    for (size_t i = start; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, data + i, sizeof(bits));
      bad |= static_cast<uint32_t>((bits & kExponent) == kExponent);
    }
    if (bad != 0) return false;
  }
  return true;
}

absl::StatusOr<absl::Span<const float>> ViewF32(absl::string_view bytes, int64_t expected_elements,
                                                FlatTensor* scratch) {
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(float) != 0) {
    auto decoded = DecodeF32(bytes, expected_elements);
    if (!decoded.ok()) return decoded.status();
    *scratch = std::move(*decoded);
    return absl::Span<const float>(*scratch);
  }
  // DecodeF32 is the one place that words the size error.
  if (static_cast<int64_t>(bytes.size()) != expected_elements * 4) {
    return DecodeF32(bytes, expected_elements).status();
  }
  // F32 is little-endian float32, the host's layout (see EncodeF32).
  return absl::Span<const float>(reinterpret_cast<const float*>(bytes.data()),
                                 static_cast<size_t>(expected_elements));
}

}  // namespace fedge
