#ifndef FEDGE_COMMON_CODEC_HALF_H_
#define FEDGE_COMMON_CODEC_HALF_H_

#include <cstdint>
#include <cstring>
#include <optional>

namespace fedge::codec {

// IEEE 754 binary16 conversions, done on the bits so that results do not depend on the
// compiler's or the CPU's half support. Inline: the codec converts millions per update.

namespace half_internal {

inline uint32_t Bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

inline float FromBits(uint32_t b) {
  float x;
  std::memcpy(&x, &b, sizeof(x));
  return x;
}

// Shifts `mant` right by `shift` (1..24), rounding to nearest with ties to even: adding
// half − 1, plus the lowest kept bit, carries into the kept bits exactly when the dropped
// bits exceed half, or equal it and the kept value is odd.
inline uint32_t ShiftRoundEven(uint32_t mant, int shift) {
  const uint32_t half = 1u << (shift - 1);
  return (mant + (half - 1) + ((mant >> shift) & 1u)) >> shift;
}

}  // namespace half_internal

// Rounds to the nearest half, ties to even; subnormal halves are produced, never flushed.
// nullopt for NaN, ±infinity and for any value whose rounding would overflow to infinity
// (|x| >= 65520): a half payload never carries a value the sender did not have.
inline std::optional<uint16_t> FloatToHalf(float x) {
  const uint32_t bits = half_internal::Bits(x);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  // 65520 = 0x477FF000 lies halfway between 65504 (the largest half) and 65536; ties to even
  // round it up, past the largest finite half. Infinities and NaNs are above it too.
  if (abs >= 0x477FF000u) return std::nullopt;
  if (abs >= 0x38800000u) {  // 2^-14 and up: a normal half.
    // Rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits. A carry out of
    // the mantissa correctly bumps the exponent.
    const uint32_t rebased = abs - ((127u - 15u) << 23);
    return static_cast<uint16_t>(sign | half_internal::ShiftRoundEven(rebased, 13));
  }
  // A subnormal half counts units of 2^-24. abs = mant * 2^(e - 150) with the implicit bit, so
  // the count is mant * 2^(e - 126), a right shift by 126 - e. At or below 2^-25 it is zero.
  if (abs <= 0x33000000u) return sign;
  const uint32_t e = abs >> 23;
  const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
  // Rounding up from the largest subnormal yields 0x0400, the smallest normal: still right.
  return static_cast<uint16_t>(sign |
                               half_internal::ShiftRoundEven(mant, static_cast<int>(126u - e)));
}

// Exact: every half, including subnormals, infinities and NaN, is a float. Written with
// selects rather than branches so that decoding loops vectorise.
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t magnitude = h & 0x7FFFu;
  // All-ones where the condition holds: masks instead of branches.
  const uint32_t is_special = 0u - static_cast<uint32_t>(magnitude >= 0x7C00u);
  const uint32_t is_subnormal = 0u - static_cast<uint32_t>(magnitude < 0x400u);
  // Normal: move exponent and mantissa into place and rebias the exponent by 127 − 15 = 112.
  // Infinity and NaN (exponent 31) need exponent 255: rebias once more.
  const uint32_t normal = (magnitude << 13) + (112u << 23) + ((112u << 23) & is_special);
  // Zero and subnormals (exponent 0) are mantissa · 2^-24, exact in float.
  const uint32_t subnormal =
      half_internal::Bits(static_cast<float>(static_cast<int32_t>(magnitude)) * 0x1p-24f);
  return half_internal::FromBits(sign | (subnormal & is_subnormal) | (normal & ~is_subnormal));
}

}  // namespace fedge::codec

#endif  // FEDGE_COMMON_CODEC_HALF_H_
