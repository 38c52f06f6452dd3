#ifndef FEDGE_COMMON_CODEC_HALF_H_
#define FEDGE_COMMON_CODEC_HALF_H_

#include <cstdint>
#include <optional>

namespace fedge::codec {

// IEEE 754 binary16 conversions, done on the bits so that results do not depend on the
// compiler's or the CPU's half support.

// Rounds to the nearest half, ties to even; subnormal halves are produced, never flushed.
// nullopt for NaN, ±infinity and for any value whose rounding would overflow to infinity
// (|x| >= 65520): a half payload never carries a value the sender did not have.
std::optional<uint16_t> FloatToHalf(float x);

// Exact: every half, including subnormals, infinities and NaN, is a float.
float HalfToFloat(uint16_t h);

}  // namespace fedge::codec

#endif  // FEDGE_COMMON_CODEC_HALF_H_
