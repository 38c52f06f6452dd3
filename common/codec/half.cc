#include "common/codec/half.h"

#include <cstring>

namespace fedge::codec {
namespace {

uint32_t Bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

float FromBits(uint32_t b) {
  float x;
  std::memcpy(&x, &b, sizeof(x));
  return x;
}

// Shifts `mant` right by `shift` (1..31), rounding to nearest with ties to even.
uint32_t ShiftRoundEven(uint32_t mant, int shift) {
  const uint32_t kept = mant >> shift;
  const uint32_t rest = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  return kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
}

}  // namespace

std::optional<uint16_t> FloatToHalf(float x) {
  const uint32_t bits = Bits(x);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  // 65520 = 0x477FF000 lies halfway between 65504 (the largest half) and 65536; ties to even
  // round it up, past the largest finite half. Infinities and NaNs are above it too.
  if (abs >= 0x477FF000u) return std::nullopt;
  if (abs >= 0x38800000u) {  // 2^-14 and up: a normal half.
    // Rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits. A carry out of
    // the mantissa correctly bumps the exponent.
    const uint32_t rebased = abs - ((127u - 15u) << 23);
    return static_cast<uint16_t>(sign | ShiftRoundEven(rebased, 13));
  }
  // A subnormal half counts units of 2^-24. abs = mant * 2^(e - 150) with the implicit bit, so
  // the count is mant * 2^(e - 126), a right shift by 126 - e. At or below 2^-25 it is zero.
  if (abs <= 0x33000000u) return sign;
  const uint32_t e = abs >> 23;
  const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
  // Rounding up from the largest subnormal yields 0x0400, the smallest normal: still right.
  return static_cast<uint16_t>(sign | ShiftRoundEven(mant, static_cast<int>(126u - e)));
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return FromBits(sign | Bits(magnitude));
  }
  if (exp == 0x1Fu) return FromBits(sign | 0x7F800000u | (mant << 13));
  return FromBits(sign | ((exp + 127u - 15u) << 23) | (mant << 13));
}

}  // namespace fedge::codec
