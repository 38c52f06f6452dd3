#include "common/codec/codec.h"

#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/codec/error_feedback.h"
#include "common/codec/half.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::codec {
namespace {

using ::testing::HasSubstr;

constexpr Encoding kAllEncodings[] = {Encoding::kF32, Encoding::kF16, Encoding::kInt8,
                                      Encoding::kTopK, Encoding::kTopKInt8};

std::vector<float> RandomVector(size_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

CodecParams Params(Encoding e, int32_t block = 256, double fraction = 0.01) {
  CodecParams p;
  p.encoding = e;
  p.block_size = block;
  p.topk_fraction = fraction;
  return p;
}

std::string MustEncode(absl::Span<const float> v, const CodecParams& p, uint64_t seed = 1) {
  absl::StatusOr<std::string> s = Encode(v, p, seed);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : std::string();
}

std::vector<float> MustDecode(absl::string_view payload, const CodecParams& p, int64_t n) {
  absl::StatusOr<std::vector<float>> d = Decode(payload, p, n);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : std::vector<float>();
}

// ---- half ----

TEST(HalfTest, EncodesKnownBitPatterns) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalf(0.5f), 0x3800);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(-std::ldexp(1.0f, -24)), 0x8001);
  EXPECT_EQ(FloatToHalf(std::ldexp(1023.0f, -24)), 0x03FF);  // largest subnormal
  EXPECT_EQ(FloatToHalf(1.0f / 3.0f), 0x3555);
  EXPECT_EQ(FloatToHalf(3.14159265f), 0x4248);
}

TEST(HalfTest, DecodesKnownBitPatterns) {
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
  EXPECT_EQ(HalfToFloat(0x8000), 0.0f);
  EXPECT_EQ(HalfToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(HalfToFloat(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
}

TEST(HalfTest, RoundsTiesToEven) {
  // Halves near 1 are 2^-10 apart.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie, down to even
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie, up to even
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3C01);
  // Subnormals: units of 2^-24.
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie, down to zero
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25) * 1.0000001f), 0x0001);
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);     // 1.5 units: up to even
  EXPECT_EQ(FloatToHalf(std::ldexp(5.0f, -25)), 0x0002);     // 2.5 units: down to even
  EXPECT_EQ(FloatToHalf(std::ldexp(2047.0f, -25)), 0x0400);  // largest subnormal rounds up
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -30)), 0x0000);
  // The top of the range: 65519.99 rounds to 65504, 65520 (a tie) would round to 65536.
  EXPECT_EQ(FloatToHalf(std::nextafter(65520.0f, 0.0f)), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.0f), std::nullopt);
  EXPECT_EQ(FloatToHalf(-1e6f), std::nullopt);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), std::nullopt);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::quiet_NaN()), std::nullopt);
}

TEST(HalfTest, EveryFiniteHalfRoundTripsAndMatchesItsDefinition) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    if (exp == 0x1F) continue;
    const double magnitude =
        exp == 0 ? std::ldexp(static_cast<double>(mant), -24)
                 : std::ldexp(static_cast<double>(1024 + mant), static_cast<int>(exp) - 25);
    const double expected = (h & 0x8000) ? -magnitude : magnitude;
    ASSERT_EQ(static_cast<double>(HalfToFloat(static_cast<uint16_t>(h))), expected) << h;
    ASSERT_EQ(FloatToHalf(HalfToFloat(static_cast<uint16_t>(h))), h) << h;
  }
}

TEST(HalfTest, PicksTheNearestHalfWithinRelativeBound) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  std::uniform_int_distribution<int> exponent(-30, 15);
  for (int i = 0; i < 200000; ++i) {
    float x = std::ldexp(mantissa(gen), exponent(gen));
    if (i % 2) x = -x;
    if (std::fabs(x) >= 65504.0f) continue;
    std::optional<uint16_t> h = FloatToHalf(x);
    ASSERT_TRUE(h.has_value()) << x;
    const double err = std::fabs(static_cast<double>(HalfToFloat(*h)) - x);
    // No neighbouring half is closer (the neighbours of a magnitude step by one in the bits).
    const uint16_t mag = *h & 0x7FFF, sign = *h & 0x8000;
    if (mag > 0) {
      ASSERT_LE(err, std::fabs(static_cast<double>(HalfToFloat(sign | (mag - 1))) - x)) << x;
    }
    if (mag < 0x7BFF) {
      ASSERT_LE(err, std::fabs(static_cast<double>(HalfToFloat(sign | (mag + 1))) - x)) << x;
    }
    if (std::fabs(x) >= std::ldexp(1.0f, -14)) {
      ASSERT_LE(err, std::ldexp(std::fabs(static_cast<double>(x)), -11)) << x;
    }
#if defined(__FLT16_MANT_DIG__)
    // The compiler's own conversion, where it has one, agrees bit for bit.
    const _Float16 ref = static_cast<_Float16>(x);
    uint16_t ref_bits;
    std::memcpy(&ref_bits, &ref, sizeof(ref_bits));
    ASSERT_EQ(*h, ref_bits) << x;
#endif
  }
}

// ---- names, sizes, layouts ----

TEST(CodecTest, NamesAndWireNumbersRoundTrip) {
  for (Encoding e : kAllEncodings) {
    EXPECT_EQ(*ParseEncoding(EncodingName(e)), e);
    EXPECT_EQ(*EncodingFromWire(static_cast<int>(e)), e);
  }
  EXPECT_EQ(static_cast<int>(Encoding::kTopKInt8), 5);
  EXPECT_EQ(ParseEncoding("bf16").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodingFromWire(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodingFromWire(6).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CodecTest, TopKCountIsCeilingOfFraction) {
  EXPECT_EQ(TopKCount(1000, 0.01), 10);
  EXPECT_EQ(TopKCount(1001, 0.01), 11);
  EXPECT_EQ(TopKCount(10, 0.01), 1);
  EXPECT_EQ(TopKCount(10, 1.0), 10);
  EXPECT_EQ(TopKCount(0, 0.5), 0);
}

TEST(CodecTest, EncodedSizeMatchesLayoutAndActualPayloads) {
  // Hand-computed: header 20; int8 blocks cost a 4-byte scale each; top-k 4+4 per kept entry.
  struct Case {
    CodecParams params;
    int64_t n;
    int64_t bytes;
  } cases[] = {
      {Params(Encoding::kF32), 1000, 4000},
      {Params(Encoding::kF16), 1000, 2020},
      {Params(Encoding::kInt8, 256), 1000, 20 + 4 * 4 + 1000},
      {Params(Encoding::kInt8, 256), 256, 20 + 4 + 256},
      {Params(Encoding::kInt8, 256), 257, 20 + 8 + 257},
      {Params(Encoding::kTopK, 256, 0.01), 1000, 20 + 10 * 8},
      {Params(Encoding::kTopKInt8, 4, 0.01), 1000, 20 + 10 * 4 + 3 * 4 + 10},
      {Params(Encoding::kF16), 0, 20},
      {Params(Encoding::kTopK), 0, 20},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(EncodingName(c.params.encoding), " n=", c.n));
    EXPECT_EQ(*EncodedSize(c.params, c.n), c.bytes);
    EXPECT_EQ(static_cast<int64_t>(MustEncode(RandomVector(c.n, 3), c.params).size()), c.bytes);
  }
  EXPECT_EQ(EncodedSize(Params(Encoding::kInt8, 0), 10).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodedSize(Params(Encoding::kTopK, 256, 0.0), 10).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodedSize(Params(Encoding::kTopK, 256, 1.5), 10).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodedSize(Params(Encoding::kF16), -1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CodecTest, F32IsHeaderlessLittleEndianFloat32) {
  const std::vector<float> v = {1.0f, -2.0f};
  const std::string expected("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8);
  EXPECT_EQ(MustEncode(v, Params(Encoding::kF32)), expected);
  EXPECT_EQ(MustDecode(expected, Params(Encoding::kF32), 2), v);
  // F32 passes non-finite values through; Inspect is what flags them.
  const std::vector<float> nan = {std::numeric_limits<float>::quiet_NaN()};
  EXPECT_TRUE(Encode(nan, Params(Encoding::kF32), 0).ok());
}

TEST(CodecTest, F16PayloadHasHeaderThenHalves) {
  const std::vector<float> v = {1.0f, -2.0f};
  const std::string expected(
      "FU\x01\x02"                        // magic, version, encoding F16
      "\x02\x00\x00\x00\x00\x00\x00\x00"  // N = 2
      "\x00\x00\x00\x00"                  // k
      "\x00\x00\x00\x00"                  // block size
      "\x00\x3c\x00\xc0",                 // 0x3C00, 0xC000
      24);
  EXPECT_EQ(MustEncode(v, Params(Encoding::kF16)), expected);
}

TEST(CodecTest, TopKPayloadHasAscendingIndicesThenValues) {
  const std::vector<float> v = {0.1f, -5.0f, 0.2f, 3.0f, 0.0f};
  const std::string p = MustEncode(v, Params(Encoding::kTopK, 256, 0.4));  // k = 2
  ASSERT_EQ(p.size(), 20u + 16u);
  uint32_t k, i0, i1;
  float v0, v1;
  std::memcpy(&k, p.data() + 12, 4);
  std::memcpy(&i0, p.data() + 20, 4);
  std::memcpy(&i1, p.data() + 24, 4);
  std::memcpy(&v0, p.data() + 28, 4);
  std::memcpy(&v1, p.data() + 32, 4);
  EXPECT_EQ(k, 2u);
  EXPECT_EQ(i0, 1u);
  EXPECT_EQ(i1, 3u);
  EXPECT_EQ(v0, -5.0f);
  EXPECT_EQ(v1, 3.0f);
}

// ---- accuracy ----

TEST(CodecTest, F16RoundTripWithinHalfPrecision) {
  const std::vector<float> v = RandomVector(10000, 11, 0.05f);
  const std::vector<float> d =
      MustDecode(MustEncode(v, Params(Encoding::kF16)), Params(Encoding::kF16), 10000);
  for (size_t i = 0; i < v.size(); ++i) {
    const double tol = std::fabs(v[i]) >= std::ldexp(1.0, -14) ? std::ldexp(std::fabs(v[i]), -11)
                                                               : std::ldexp(1.0, -25);
    ASSERT_LE(std::fabs(static_cast<double>(d[i]) - v[i]), tol) << i;
  }
}

TEST(CodecTest, F16RefusesValuesBeyondHalfRangeNamingIndexAndValue) {
  std::vector<float> v(10, 1.0f);
  v[7] = 70000.0f;
  absl::StatusOr<std::string> s = Encode(v, Params(Encoding::kF16), 0);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("element 7 (70000)"));
  v[7] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(Encode(v, Params(Encoding::kF16), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CodecTest, LossyEncodingsRefuseNonFiniteInputNamingIndex) {
  std::vector<float> v(50, 0.5f);
  v[42] = std::numeric_limits<float>::quiet_NaN();
  for (Encoding e : {Encoding::kInt8, Encoding::kTopK, Encoding::kTopKInt8}) {
    absl::StatusOr<std::string> s = Encode(v, Params(e, 8, 0.1), 0);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << EncodingName(e);
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("element 42"));
  }
}

// The scale of each block of `v`, computed here from the definition.
std::vector<double> BlockScales(absl::Span<const float> v, size_t block) {
  std::vector<double> scales;
  for (size_t b = 0; b < v.size(); b += block) {
    double m = 0;
    for (size_t i = b; i < std::min(v.size(), b + block); ++i)
      m = std::max(m, std::fabs(double{v[i]}));
    scales.push_back(m / 127.0);
  }
  return scales;
}

TEST(CodecTest, Int8DecodesWithinOneScaleStep) {
  std::vector<float> v = RandomVector(1000, 5);
  for (size_t i = 300; i < 400; ++i) v[i] *= 1e-3f;  // a block with a much smaller scale
  const CodecParams p = Params(Encoding::kInt8, 100);
  const std::vector<double> scales = BlockScales(v, 100);
  for (uint64_t seed = 0; seed < 5; ++seed) {
    const std::vector<float> d = MustDecode(MustEncode(v, p, seed), p, 1000);
    for (size_t i = 0; i < v.size(); ++i) {
      ASSERT_LE(std::fabs(static_cast<double>(d[i]) - v[i]), scales[i / 100] * (1 + 1e-5)) << i;
    }
  }
}

TEST(CodecTest, Int8IsReproducibleBySeed) {
  const std::vector<float> v = RandomVector(1000, 6);
  const CodecParams p = Params(Encoding::kInt8);
  EXPECT_EQ(MustEncode(v, p, 42), MustEncode(v, p, 42));
  EXPECT_NE(MustEncode(v, p, 42), MustEncode(v, p, 43));
}

TEST(CodecTest, Int8ZeroBlockDecodesToZero) {
  std::vector<float> v(20, 0.0f);
  v[15] = 2.0f;
  const CodecParams p = Params(Encoding::kInt8, 10);
  const std::vector<float> d = MustDecode(MustEncode(v, p), p, 20);
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(d[i], 0.0f);
  EXPECT_FLOAT_EQ(d[15], 2.0f);  // the block maximum is 127 steps, up to float rounding
}

TEST(CodecTest, Int8StochasticRoundingIsUnbiased) {
  // 0.3 sits between quantisation steps (0.3 · 127 = 38.1): rounding to nearest would decode
  // 38/127 = 0.29921 every time, a bias of 8e-4; stochastic rounding averages to 0.3.
  std::vector<float> v(256, 0.3f);
  v[0] = 1.0f;
  const CodecParams p = Params(Encoding::kInt8, 256);
  const int kSeeds = 2000;
  double sum_all = 0, sum_one = 0;
  for (int seed = 0; seed < kSeeds; ++seed) {
    const std::vector<float> d = MustDecode(MustEncode(v, p, seed), p, 256);
    for (size_t i = 1; i < d.size(); ++i) sum_all += d[i];
    sum_one += d[200];
  }
  // One draw has standard deviation (1/127)·sqrt(0.1·0.9) = 2.4e-3.
  EXPECT_NEAR(sum_all / (kSeeds * 255.0), 0.3, 2e-5);
  EXPECT_NEAR(sum_one / kSeeds, 0.3, 3e-4);
}

// Indices of the k largest magnitudes, by a full sort.
std::vector<uint32_t> ReferenceTopK(const std::vector<float>& v, size_t k) {
  std::vector<uint32_t> idx(v.size());
  for (uint32_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(),
                   [&](uint32_t a, uint32_t b) { return std::fabs(v[a]) > std::fabs(v[b]); });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

TEST(CodecTest, TopKKeepsExactlyTheLargestMagnitudes) {
  const std::vector<float> v = RandomVector(5000, 8);
  const CodecParams p = Params(Encoding::kTopK, 256, 0.013);  // k = ceil(65) = 65
  const std::vector<float> d = MustDecode(MustEncode(v, p), p, 5000);
  const std::vector<uint32_t> keep = ReferenceTopK(v, 65);
  std::vector<float> expected(5000, 0.0f);
  for (uint32_t i : keep) expected[i] = v[i];
  EXPECT_EQ(d, expected);
}

TEST(CodecTest, TopKInt8QuantisesTheKeptValuesPerBlock) {
  const std::vector<float> v = RandomVector(5000, 9);
  const CodecParams p = Params(Encoding::kTopKInt8, 16, 0.02);  // k = 100
  const std::vector<float> d = MustDecode(MustEncode(v, p), p, 5000);
  const std::vector<uint32_t> keep = ReferenceTopK(v, 100);
  std::vector<float> kept;
  for (uint32_t i : keep) kept.push_back(v[i]);
  const std::vector<double> scales = BlockScales(kept, 16);
  std::vector<bool> is_kept(5000, false);
  for (size_t j = 0; j < keep.size(); ++j) {
    is_kept[keep[j]] = true;
    EXPECT_LE(std::fabs(static_cast<double>(d[keep[j]]) - kept[j]), scales[j / 16] * (1 + 1e-5));
  }
  for (size_t i = 0; i < d.size(); ++i) {
    if (!is_kept[i]) {
      ASSERT_EQ(d[i], 0.0f) << i;
    }
  }
}

// ---- refusals ----

TEST(CodecTest, RefusesPayloadMadeForAnotherRoundNamingBoth) {
  const std::vector<float> v = RandomVector(1000, 10);
  const std::string topk = MustEncode(v, Params(Encoding::kTopK, 256, 0.01));
  absl::Status st = Decode(topk, Params(Encoding::kInt8), 1000).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("encoded topk; the round expects int8"));

  st = Decode(topk, Params(Encoding::kTopK, 256, 0.01), 999).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("holds 1000 elements; the round expects 999"));

  st = Decode(topk, Params(Encoding::kTopK, 256, 0.02), 1000).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("k=10 entries; the round expects k=20"));

  const std::string int8 = MustEncode(v, Params(Encoding::kInt8, 128));
  st = Decode(int8, Params(Encoding::kInt8, 256), 1000).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("block size 128; the round expects 256"));

  // A headerless F32 payload where F16 is expected, and the other way round.
  const std::string f32 = MustEncode(v, Params(Encoding::kF32));
  EXPECT_EQ(Decode(f32, Params(Encoding::kF16), 1000).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      Decode(MustEncode(v, Params(Encoding::kF16)), Params(Encoding::kF32), 1000).status().code(),
      absl::StatusCode::kInvalidArgument);
}

bool IsRefusal(const absl::Status& st) {
  return st.code() == absl::StatusCode::kInvalidArgument ||
         st.code() == absl::StatusCode::kDataLoss;
}

TEST(CodecTest, RefusesEveryTruncationAndExtension) {
  const std::vector<float> v = RandomVector(37, 12);
  for (Encoding e : kAllEncodings) {
    SCOPED_TRACE(EncodingName(e));
    const CodecParams p = Params(e, 8, 0.3);
    const std::string payload = MustEncode(v, p);
    for (size_t len = 0; len < payload.size(); ++len) {
      const std::string prefix = payload.substr(0, len);
      ASSERT_TRUE(IsRefusal(Decode(prefix, p, 37).status())) << len;
      ASSERT_TRUE(IsRefusal(Inspect(prefix, p, 37).status())) << len;
    }
    EXPECT_TRUE(IsRefusal(Decode(payload + '\0', p, 37).status()));
    EXPECT_TRUE(Decode(payload, p, 37).ok());
  }
}

// A sink that checks the DecodeSink contract as it goes.
class ContractSink : public DecodeSink {
 public:
  explicit ContractSink(int64_t n) : n_(n) {}
  void Dense(int64_t offset, absl::Span<const float> values) override {
    EXPECT_EQ(offset, next_dense_);
    next_dense_ = offset + static_cast<int64_t>(values.size());
    EXPECT_LE(next_dense_, n_);
    ++calls_;
  }
  void Sparse(absl::Span<const uint32_t> indices, absl::Span<const float> values) override {
    EXPECT_EQ(indices.size(), values.size());
    for (uint32_t i : indices) {
      EXPECT_GT(static_cast<int64_t>(i), last_sparse_);
      EXPECT_LT(static_cast<int64_t>(i), n_);
      last_sparse_ = i;
    }
    ++calls_;
  }
  int64_t next_dense_ = 0;
  int64_t last_sparse_ = -1;
  int calls_ = 0;

 private:
  int64_t n_;
};

TEST(CodecTest, RandomBytesNeverCrashAndNeverBreakTheSinkContract) {
  std::mt19937 gen(13);
  const int64_t n = 50;
  for (Encoding e : kAllEncodings) {
    const CodecParams p = Params(e, 8, 0.2);
    const std::string valid = MustEncode(RandomVector(n, 14), p);
    for (int trial = 0; trial < 3000; ++trial) {
      std::string bytes;
      if (trial % 2 == 0) {
        // Random length, random bytes.
        bytes.resize(std::uniform_int_distribution<size_t>(0, 2 * valid.size())(gen));
        for (char& c : bytes) c = static_cast<char>(gen());
      } else {
        // The valid header (for headed encodings) with a random body of the right length.
        bytes = valid;
        const size_t from = e == Encoding::kF32 ? 0 : kHeaderBytes;
        for (size_t i = from; i < bytes.size(); ++i) bytes[i] = static_cast<char>(gen());
      }
      ContractSink sink(n);
      absl::Status st = DecodeInto(bytes, p, n, sink);
      if (st.ok()) {
        if (e != Encoding::kTopK && e != Encoding::kTopKInt8) {
          EXPECT_EQ(sink.next_dense_, n);
        }
      } else {
        EXPECT_TRUE(IsRefusal(st)) << st;
        EXPECT_EQ(sink.calls_, 0) << "a refused payload reached the sink";
      }
    }
  }
}

void PutU32(std::string* s, size_t at, uint32_t v) { std::memcpy(&(*s)[at], &v, 4); }
void PutF32(std::string* s, size_t at, float v) { std::memcpy(&(*s)[at], &v, 4); }

TEST(CodecTest, RefusesBadIndicesAsDataLoss) {
  const std::vector<float> v = RandomVector(100, 15);
  const CodecParams p = Params(Encoding::kTopK, 256, 0.05);  // k = 5, indices at 20..39
  const std::string good = MustEncode(v, p);
  std::string bad = good;
  PutU32(&bad, 20 + 4 * 4, 100);  // last index out of range
  absl::Status st = Decode(bad, p, 100).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(st.message()), HasSubstr("index 4 is 100"));

  bad = good;
  uint32_t second;
  std::memcpy(&second, good.data() + 24, 4);
  PutU32(&bad, 28, second);  // third index repeats the second
  st = Decode(bad, p, 100).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(st.message()), HasSubstr("not above the previous index"));

  bad = good;
  PutU32(&bad, 20, second + 1);  // first index above the second
  EXPECT_EQ(Decode(bad, p, 100).status().code(), absl::StatusCode::kDataLoss);
}

TEST(CodecTest, RefusesImpossibleQuantisedValuesAsDataLoss) {
  const std::vector<float> v = RandomVector(20, 16);
  const CodecParams p = Params(Encoding::kInt8, 10);  // blocks at 20 (scale) 24..33, 34 38..47
  const std::string good = MustEncode(v, p);
  std::string bad = good;
  bad[40] = static_cast<char>(-128);
  absl::Status st = Decode(bad, p, 20).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(st.message()), HasSubstr("value 12 is -128"));
  bad = good;
  PutF32(&bad, 34, -1.0f);
  st = Decode(bad, p, 20).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(st.message()), HasSubstr("block 1 has scale -1"));
  bad = good;
  PutF32(&bad, 20, std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(Decode(bad, p, 20).status().code(), absl::StatusCode::kDataLoss);
}

// ---- streaming ----

double ReferenceNorm(const std::vector<float>& v) {
  long double s = 0;
  for (float x : v) s += static_cast<long double>(x) * x;
  return static_cast<double>(std::sqrt(s));
}

// N spans several kDecodeBlock runs; block 5000 exceeds the run buffer on purpose.
class StreamingTest : public ::testing::TestWithParam<CodecParams> {};

TEST_P(StreamingTest, AccumulateIntoAddsWeightTimesTheFullDecode) {
  const int64_t n = 3 * kDecodeBlock + 123;
  const CodecParams p = GetParam();
  const std::vector<float> v = RandomVector(n, 17);
  const std::string payload = MustEncode(v, p);
  const std::vector<float> full = MustDecode(payload, p, n);
  std::vector<double> acc(n);
  for (int64_t i = 0; i < n; ++i) acc[i] = 0.25 * static_cast<double>(i % 7);
  const double w = 0.375;
  ASSERT_TRUE(AccumulateInto(payload, p, w, absl::MakeSpan(acc)).ok());
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(acc[i], 0.25 * static_cast<double>(i % 7) + w * static_cast<double>(full[i])) << i;
  }
}

TEST_P(StreamingTest, InspectNormEqualsNormOfFullDecode) {
  const int64_t n = 3 * kDecodeBlock + 123;
  const CodecParams p = GetParam();
  const std::string payload = MustEncode(RandomVector(n, 18), p);
  absl::StatusOr<UpdateStats> stats = Inspect(payload, p, n);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_TRUE(stats->all_finite);
  EXPECT_EQ(stats->first_non_finite, -1);
  const double expected = ReferenceNorm(MustDecode(payload, p, n));
  EXPECT_NEAR(stats->l2_norm, expected, 1e-12 * expected);
}

TEST_P(StreamingTest, SinkSeesRunsInOrderWithinTheBuffer) {
  const int64_t n = 3 * kDecodeBlock + 123;
  const CodecParams p = GetParam();
  ContractSink sink(n);
  ASSERT_TRUE(DecodeInto(MustEncode(RandomVector(n, 19), p), p, n, sink).ok());
  if (p.encoding == Encoding::kTopK || p.encoding == Encoding::kTopKInt8) {
    EXPECT_GE(sink.calls_, 1);
  } else {
    EXPECT_EQ(sink.next_dense_, n);
    EXPECT_GE(sink.calls_, 2);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Encodings, StreamingTest,
    ::testing::Values(Params(Encoding::kF32), Params(Encoding::kF16), Params(Encoding::kInt8, 256),
                      Params(Encoding::kInt8, 5000), Params(Encoding::kInt8, 3),
                      Params(Encoding::kTopK, 256, 0.5), Params(Encoding::kTopK, 256, 0.01),
                      Params(Encoding::kTopKInt8, 64, 0.3), Params(Encoding::kTopKInt8, 5000, 0.5)),
    [](const ::testing::TestParamInfo<CodecParams>& info) {
      return absl::StrCat(EncodingName(info.param.encoding), "_b", info.param.block_size, "_k",
                          static_cast<int>(info.param.topk_fraction * 100));
    });

TEST(CodecTest, InspectFindsNonFiniteValues) {
  std::vector<float> v(10000, 0.5f);
  v[9000] = std::numeric_limits<float>::infinity();
  absl::StatusOr<UpdateStats> stats =
      Inspect(MustEncode(v, Params(Encoding::kF32)), Params(Encoding::kF32), 10000);
  ASSERT_TRUE(stats.ok());
  EXPECT_FALSE(stats->all_finite);
  EXPECT_EQ(stats->first_non_finite, 9000);

  // An F16 payload carrying a NaN pattern at element 3.
  std::string f16 = MustEncode(std::vector<float>(8, 1.0f), Params(Encoding::kF16));
  f16[20 + 2 * 3] = 0x00;
  f16[20 + 2 * 3 + 1] = 0x7E;
  stats = Inspect(f16, Params(Encoding::kF16), 8);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->first_non_finite, 3);
}

TEST(CodecTest, AccumulateIntoLeavesAccumulatorUntouchedOnRefusal) {
  const int64_t n = 4 * kDecodeBlock;
  const CodecParams p = Params(Encoding::kTopK, 256, 0.9);  // several sparse batches
  std::string payload = MustEncode(RandomVector(n, 20), p);
  const int64_t k = TopKCount(n, 0.9);
  PutU32(&payload, kHeaderBytes + 4 * (k - 1), 0);  // only the very last index is bad
  std::vector<double> acc(n, 1.0);
  EXPECT_EQ(AccumulateInto(payload, p, 1.0, absl::MakeSpan(acc)).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(acc, std::vector<double>(n, 1.0));
}

// ---- error feedback ----

class ErrorFeedbackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/codec_ef_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<ErrorFeedback> OpenFeedback() {
    absl::StatusOr<std::unique_ptr<ErrorFeedback>> ef = ErrorFeedback::Open({dir_});
    EXPECT_TRUE(ef.ok()) << ef.status();
    return ef.ok() ? *std::move(ef) : nullptr;
  }

  std::string dir_;
  const std::string hash_ = "ab12cd";
};

TEST_F(ErrorFeedbackTest, KeepOnlyForgetsEveryOtherResidualOnDiskToo) {
  const CodecParams p = Params(Encoding::kTopK, 256, 0.1);
  std::unique_ptr<ErrorFeedback> ef = OpenFeedback();
  const std::vector<float> delta = RandomVector(100, 7, 1.0f);
  ASSERT_TRUE(ef->Compress("job-a", delta, p, 1).ok());
  ASSERT_TRUE(ef->Compress("job-b", delta, p, 1).ok());
  ASSERT_TRUE(ef->KeepOnly("job-b").ok());
  EXPECT_TRUE(ef->Residual("job-a").empty());
  EXPECT_EQ(ef->Residual("job-b").size(), 100u);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/job-a.residual"));
  std::unique_ptr<ErrorFeedback> reopened = OpenFeedback();
  EXPECT_TRUE(reopened->Residual("job-a").empty());
  EXPECT_EQ(reopened->Residual("job-b"), ef->Residual("job-b"));
}

TEST_F(ErrorFeedbackTest, DecodedUpdatesPlusResidualSumToTheDeltas) {
  for (const CodecParams& p :
       {Params(Encoding::kTopK, 256, 0.05), Params(Encoding::kTopKInt8, 32, 0.05),
        Params(Encoding::kInt8, 64)}) {
    SCOPED_TRACE(EncodingName(p.encoding));
    std::unique_ptr<ErrorFeedback> ef = OpenFeedback();
    ASSERT_TRUE(ef->Clear(hash_).ok());
    const size_t n = 1000;
    std::vector<double> sum_deltas(n, 0), sum_decoded(n, 0);
    for (int round = 0; round < 60; ++round) {
      const std::vector<float> delta = RandomVector(n, 100 + round, 0.01f);
      absl::StatusOr<std::string> payload = ef->Compress(hash_, delta, p, round);
      ASSERT_TRUE(payload.ok()) << payload.status();
      const std::vector<float> decoded = MustDecode(*payload, p, n);
      for (size_t i = 0; i < n; ++i) {
        sum_deltas[i] += delta[i];
        sum_decoded[i] += decoded[i];
      }
    }
    const std::vector<float> residual = ef->Residual(hash_);
    ASSERT_EQ(residual.size(), n);
    double residual_norm = 0;
    for (size_t i = 0; i < n; ++i) {
      ASSERT_NEAR(sum_decoded[i] + residual[i], sum_deltas[i], 1e-5) << i;
      residual_norm += double{residual[i]} * residual[i];
    }
    // Something was held back, or the check above would say nothing about the residual.
    EXPECT_GT(residual_norm, 1e-6);
  }
}

TEST_F(ErrorFeedbackTest, ResidualSurvivesReopenAndFeedsTheNextUpdate) {
  const CodecParams p = Params(Encoding::kTopK, 256, 0.1);
  const std::vector<float> d1 = RandomVector(200, 30), d2 = RandomVector(200, 31);
  std::vector<float> residual;
  {
    std::unique_ptr<ErrorFeedback> ef = OpenFeedback();
    ASSERT_TRUE(ef->Compress(hash_, d1, p, 0).ok());
    residual = ef->Residual(hash_);
  }
  // Independently: the residual is d1 with its top-k entries zeroed.
  std::vector<float> expected = d1;
  for (uint32_t i : ReferenceTopK(d1, 20)) expected[i] = 0;
  EXPECT_EQ(residual, expected);

  std::unique_ptr<ErrorFeedback> reopened = OpenFeedback();
  EXPECT_EQ(reopened->Residual(hash_), expected);
  std::vector<float> sum(200);
  for (size_t i = 0; i < 200; ++i) sum[i] = d2[i] + expected[i];
  absl::StatusOr<std::string> payload = reopened->Compress(hash_, d2, p, 0);
  ASSERT_TRUE(payload.ok());
  EXPECT_EQ(*payload, MustEncode(sum, p));
}

TEST_F(ErrorFeedbackTest, DiscardsCorruptFilesOnOpen) {
  const CodecParams p = Params(Encoding::kTopK, 256, 0.1);
  {
    std::unique_ptr<ErrorFeedback> ef = OpenFeedback();
    ASSERT_TRUE(ef->Compress(hash_, RandomVector(100, 40), p, 0).ok());
    ASSERT_TRUE(ef->Compress("other", RandomVector(100, 41), p, 0).ok());
    ASSERT_TRUE(ef->Compress("third", RandomVector(100, 42), p, 0).ok());
  }
  const std::string path = dir_ + "/" + hash_ + ".residual";
  {
    // Flip one bit of one value: the checksum catches it.
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(30);
    char c;
    f.get(c);
    f.seekp(30);
    f.put(static_cast<char>(c ^ 0x01));
  }
  std::filesystem::resize_file(dir_ + "/other.residual", 50);  // truncated
  std::ofstream(dir_ + "/junk.residual") << "not a residual";
  std::unique_ptr<ErrorFeedback> ef = OpenFeedback();
  ASSERT_NE(ef, nullptr);
  EXPECT_TRUE(ef->Residual(hash_).empty());
  EXPECT_TRUE(ef->Residual("other").empty());
  EXPECT_TRUE(ef->Residual("junk").empty());
  EXPECT_EQ(ef->Residual("third").size(), 100u);
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(ErrorFeedbackTest, DiscardsResidualOfAnotherLength) {
  const CodecParams p = Params(Encoding::kTopK, 256, 0.1);
  std::unique_ptr<ErrorFeedback> ef = OpenFeedback();
  ASSERT_TRUE(ef->Compress(hash_, RandomVector(100, 50), p, 0).ok());
  const std::vector<float> d = RandomVector(120, 51);
  absl::StatusOr<std::string> payload = ef->Compress(hash_, d, p, 0);
  ASSERT_TRUE(payload.ok());
  EXPECT_EQ(*payload, MustEncode(d, p));
  EXPECT_EQ(ef->Residual(hash_).size(), 120u);
}

TEST_F(ErrorFeedbackTest, RefusesUnsafeHashesAndKeepsResidualOnEncodeError) {
  std::unique_ptr<ErrorFeedback> ef = OpenFeedback();
  const std::vector<float> d(10, 1.0f);
  EXPECT_EQ(ef->Compress("../escape", d, Params(Encoding::kTopK), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ef->Compress("", d, Params(Encoding::kTopK), 0).status().code(),
            absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(ef->Compress(hash_, RandomVector(10, 60), Params(Encoding::kTopK, 256, 0.2), 0).ok());
  const std::vector<float> before = ef->Residual(hash_);
  std::vector<float> bad(10, 0.0f);
  bad[3] = 1e6f;  // beyond half range
  EXPECT_EQ(ef->Compress(hash_, bad, Params(Encoding::kF16), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ef->Residual(hash_), before);
}

TEST_F(ErrorFeedbackTest, ConcurrentModelsMatchSequentialRuns) {
  const CodecParams p = Params(Encoding::kTopK, 256, 0.05);
  const std::vector<std::string> hashes = {"m0", "m1", "m2"};
  auto run = [&](ErrorFeedback* ef, const std::string& hash, int salt) {
    for (int round = 0; round < 20; ++round) {
      ASSERT_TRUE(ef->Compress(hash, RandomVector(300, 1000 * salt + round), p, round).ok());
    }
  };
  std::unique_ptr<ErrorFeedback> concurrent = OpenFeedback();
  {
    std::vector<std::thread> threads;
    for (int m = 0; m < 3; ++m) threads.emplace_back(run, concurrent.get(), hashes[m], m);
    for (std::thread& t : threads) t.join();
  }
  for (int m = 0; m < 3; ++m) {
    ASSERT_TRUE(concurrent->Clear("seq").ok());
    run(concurrent.get(), "seq", m);
    EXPECT_EQ(concurrent->Residual(hashes[m]), concurrent->Residual("seq")) << hashes[m];
  }
}

TEST_F(ErrorFeedbackTest, ClearForgetsTheResidualOnDisk) {
  std::unique_ptr<ErrorFeedback> ef = OpenFeedback();
  ASSERT_TRUE(ef->Compress(hash_, RandomVector(10, 70), Params(Encoding::kTopK, 256, 0.2), 0).ok());
  ASSERT_TRUE(ef->Clear(hash_).ok());
  EXPECT_TRUE(ef->Residual(hash_).empty());
  EXPECT_TRUE(OpenFeedback()->Residual(hash_).empty());
}

}  // namespace
}  // namespace fedge::codec
