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

}  // namespace fedge
