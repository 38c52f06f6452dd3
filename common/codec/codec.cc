#include "common/codec/codec.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/codec/half.h"

namespace fedge::codec {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the wire formats are little-endian and are copied as-is");
static_assert(sizeof(float) == 4, "float32 wire values need 4-byte floats");

namespace {

// Header layout (all little-endian):
//   0..1   magic "FU"
//   2      format version (1)
//   3      encoding (fedge.v1.Encoding number)
//   4..11  N, uint64
//   12..15 k, uint32 (0 unless top-k)
//   16..19 block size, uint32 (0 unless int8-quantised)
constexpr char kMagic0 = 'F';
constexpr char kMagic1 = 'U';
constexpr uint8_t kFormatVersion = 1;
constexpr int32_t kMaxBlockSize = 65536;

struct Header {
  Encoding encoding;
  uint64_t num_elements;
  uint32_t k;
  uint32_t block_size;
};

template <typename T>
T Load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <typename T>
void Store(char* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

bool IsTopK(Encoding e) { return e == Encoding::kTopK || e == Encoding::kTopKInt8; }
bool IsQuantised(Encoding e) { return e == Encoding::kInt8 || e == Encoding::kTopKInt8; }

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Bytes of `count` values quantised in blocks of `block`: a float32 scale per block and one
// int8 per value.
int64_t QuantisedBytes(int64_t count, int64_t block) { return 4 * CeilDiv(count, block) + count; }

// The header every encoding but F32 carries, as the round expects it.
Header ExpectedHeader(const CodecParams& params, int64_t n) {
  return Header{
      params.encoding, static_cast<uint64_t>(n),
      IsTopK(params.encoding) ? static_cast<uint32_t>(TopKCount(n, params.topk_fraction)) : 0u,
      IsQuantised(params.encoding) ? static_cast<uint32_t>(params.block_size) : 0u};
}

void WriteHeader(const Header& h, std::string* out) {
  char buf[kHeaderBytes];
  buf[0] = kMagic0;
  buf[1] = kMagic1;
  buf[2] = static_cast<char>(kFormatVersion);
  buf[3] = static_cast<char>(static_cast<int>(h.encoding));
  Store<uint64_t>(buf + 4, h.num_elements);
  Store<uint32_t>(buf + 12, h.k);
  Store<uint32_t>(buf + 16, h.block_size);
  out->append(buf, sizeof(buf));
}

// SplitMix64: tiny, fast and fully specified, so a seed gives the same bytes on every build.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t state_;
};

absl::Status NonFiniteInput(Encoding e, int64_t index, float value) {
  return absl::InvalidArgumentError(absl::StrCat("cannot encode element ", index, " (", value,
                                                 ") as ", EncodingName(e),
                                                 ": only finite values are allowed"));
}

// Appends `values` quantised in blocks: per block a float32 scale = max|x| / 127 (nudged up
// if rounding left max|x| / scale above 127), then each x / scale stochastically rounded to an
// int8 in [-127, 127]. E[q · scale] = x, and |q · scale − x| < scale.
void QuantiseBlocks(absl::Span<const float> values, int64_t block, Rng& rng, std::string* out) {
  const size_t start = out->size();
  out->resize(start + static_cast<size_t>(QuantisedBytes(values.size(), block)));
  char* p = out->data() + start;
  for (size_t b = 0; b < values.size(); b += static_cast<size_t>(block)) {
    const size_t len = std::min(values.size() - b, static_cast<size_t>(block));
    float max_abs = 0;
    for (size_t i = 0; i < len; ++i) max_abs = std::max(max_abs, std::fabs(values[b + i]));
    float scale = max_abs / 127.0f;
    // Tiny maxima can underflow or lose precision in the division; make the scale large
    // enough that no quotient exceeds 127 (one or two steps at most).
    while (max_abs > 0 && static_cast<double>(max_abs) / scale > 127.0) {
      scale = std::nextafter(scale, std::numeric_limits<float>::infinity());
    }
    Store<float>(p, scale);
    p += 4;
    for (size_t i = 0; i < len; ++i) {
      int q = 0;
      if (scale > 0) {
        // y lies in [-127, 127], so y + u + 128 is positive and truncation is floor(y + u);
        // this avoids a libm floor call per value.
        const double y = static_cast<double>(values[b + i]) / scale;
        q = static_cast<int>(y + rng.Uniform() + 128.0) - 128;
        q = std::clamp(q, -127, 127);
      }
      *p++ = static_cast<char>(static_cast<int8_t>(q));
    }
  }
}

// Indices of the k largest magnitudes, ascending; ties go to the lower index. Selects the
// k-th largest magnitude on a copy of the magnitudes (contiguous floats, cheaper to partition
// than indices), then collects indices in one ordered pass.
std::vector<uint32_t> TopKIndices(absl::Span<const float> values, int64_t k) {
  std::vector<uint32_t> idx;
  if (k <= 0) return idx;
  idx.reserve(static_cast<size_t>(k));
  std::vector<float> mags(values.size());
  for (size_t i = 0; i < values.size(); ++i) mags[i] = std::fabs(values[i]);
  std::nth_element(mags.begin(), mags.begin() + (k - 1), mags.end(), std::greater<float>());
  const float threshold = mags[static_cast<size_t>(k - 1)];
  int64_t above = 0;
  for (float v : values) above += std::fabs(v) > threshold ? 1 : 0;
  int64_t ties_left = k - above;  // entries equal to the threshold that still fit, lowest first
  for (size_t i = 0; i < values.size(); ++i) {
    const float a = std::fabs(values[i]);
    if (a > threshold) {
      idx.push_back(static_cast<uint32_t>(i));
    } else if (a == threshold && ties_left > 0) {
      idx.push_back(static_cast<uint32_t>(i));
      --ties_left;
    }
  }
  return idx;
}

absl::Status CheckPayloadLength(absl::string_view payload, int64_t expected, Encoding e) {
  if (static_cast<int64_t>(payload.size()) != expected) {
    return absl::DataLossError(absl::StrCat(EncodingName(e), " payload has ", payload.size(),
                                            " bytes; its header declares ", expected));
  }
  return absl::OkStatus();
}

// Checks the header against what the round expects and the payload's length against the
// header. On success the payload is exactly EncodedSize(params, n) bytes.
absl::Status CheckHeader(absl::string_view payload, const CodecParams& params, int64_t n) {
  const absl::string_view want_name = EncodingName(params.encoding);
  if (static_cast<int64_t>(payload.size()) < kHeaderBytes) {
    return absl::DataLossError(absl::StrCat("payload has ", payload.size(),
                                            " bytes, fewer than the ", kHeaderBytes,
                                            "-byte update header; the round expects ", want_name));
  }
  const char* p = payload.data();
  if (p[0] != kMagic0 || p[1] != kMagic1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "payload does not start with the update header magic \"FU\"; the round expects ",
        want_name));
  }
  if (static_cast<uint8_t>(p[2]) != kFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "payload has header format version ", static_cast<int>(static_cast<uint8_t>(p[2])),
        "; this build reads version ", static_cast<int>(kFormatVersion)));
  }
  const int wire = static_cast<uint8_t>(p[3]);
  absl::StatusOr<Encoding> got = EncodingFromWire(wire);
  if (!got.ok() || *got == Encoding::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("payload header names encoding ", wire,
                                                   ", not a headed encoding; the round expects ",
                                                   want_name));
  }
  if (*got != params.encoding) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload is encoded ", EncodingName(*got), "; the round expects ", want_name));
  }
  const Header want = ExpectedHeader(params, n);
  const uint64_t got_n = Load<uint64_t>(p + 4);
  if (got_n != want.num_elements) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload holds ", got_n, " elements; the round expects ", n));
  }
  const uint32_t got_k = Load<uint32_t>(p + 12);
  if (got_k != want.k) {
    return absl::InvalidArgumentError(absl::StrCat(
        "payload keeps k=", got_k, " entries; the round expects k=", want.k,
        IsTopK(params.encoding) ? absl::StrCat(" (fraction ", params.topk_fraction, " of ", n, ")")
                                : std::string()));
  }
  const uint32_t got_block = Load<uint32_t>(p + 16);
  if (got_block != want.block_size) {
    return absl::InvalidArgumentError(absl::StrCat("payload has block size ", got_block,
                                                   "; the round expects ", want.block_size));
  }
  absl::StatusOr<int64_t> size = EncodedSize(params, n);
  if (!size.ok()) return size.status();
  return CheckPayloadLength(payload, *size, params.encoding);
}

// Checks quantised blocks of `count` values starting at `p`: every scale finite and not
// negative, no int8 at -128.
absl::Status CheckQuantised(const char* p, int64_t count, int64_t block, absl::string_view what) {
  for (int64_t b = 0; b < count; b += block) {
    const float scale = Load<float>(p);
    if (!std::isfinite(scale) || std::signbit(scale)) {
      return absl::DataLossError(absl::StrCat(what, " block ", b / block, " has scale ", scale,
                                              "; scales are finite and not negative"));
    }
    p += 4;
    const int64_t len = std::min(count - b, block);
    for (int64_t i = 0; i < len; ++i) {
      if (static_cast<int8_t>(p[i]) == -128) {
        return absl::DataLossError(
            absl::StrCat(what, " value ", b + i, " is -128; quantised values lie in [-127, 127]"));
      }
    }
    p += len;
  }
  return absl::OkStatus();
}

absl::Status CheckIndices(const char* p, int64_t k, int64_t n) {
  int64_t prev = -1;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t idx = Load<uint32_t>(p + 4 * i);
    if (idx >= n) {
      return absl::DataLossError(
          absl::StrCat("top-k index ", i, " is ", idx, ", beyond the update's ", n, " elements"));
    }
    if (idx <= prev) {
      return absl::DataLossError(
          absl::StrCat("top-k index ", i, " is ", idx, ", not above the previous index ", prev));
    }
    prev = idx;
  }
  return absl::OkStatus();
}

// Checks everything a decoder relies on, so that decoding itself cannot fail.
absl::Status CheckPayload(absl::string_view payload, const CodecParams& params, int64_t n) {
  if (n < 0 || n > kMaxElements) {
    return absl::InvalidArgumentError(
        absl::StrCat("update has ", n, " elements; at most ", kMaxElements, " are supported"));
  }
  if (auto st = ValidateParams(params); !st.ok()) return st;
  if (params.encoding == Encoding::kF32) {
    if (static_cast<int64_t>(payload.size()) != 4 * n) {
      return absl::InvalidArgumentError(absl::StrCat("f32 payload has ", payload.size(),
                                                     " bytes; the round expects ", 4 * n, " (", n,
                                                     " float32 values)"));
    }
    return absl::OkStatus();
  }
  if (auto st = CheckHeader(payload, params, n); !st.ok()) return st;
  const char* body = payload.data() + kHeaderBytes;
  const int64_t k = TopKCount(n, params.topk_fraction);
  switch (params.encoding) {
    case Encoding::kInt8:
      return CheckQuantised(body, n, params.block_size, "int8");
    case Encoding::kTopK:
      return CheckIndices(body, k, n);
    case Encoding::kTopKInt8:
      if (auto st = CheckIndices(body, k, n); !st.ok()) return st;
      return CheckQuantised(body + 4 * k, k, params.block_size, "topk_int8 kept");
    default:
      return absl::OkStatus();
  }
}

// Dequantises `count` values (already checked) starting at p into out; returns the end.
const char* Dequantise(const char* p, int64_t block, int64_t count, float* out) {
  // The caller walks whole blocks, so `p` is at a block's scale when `count` starts a block.
  int64_t done = 0;
  while (done < count) {
    const float scale = Load<float>(p);
    p += 4;
    const int64_t len = std::min(block, count - done);
    for (int64_t i = 0; i < len; ++i)
      out[done + i] = static_cast<float>(static_cast<int8_t>(p[i])) * scale;
    p += len;
    done += len;
  }
  return p;
}

// Streams an already checked payload. Dense runs and sparse batches are at most kDecodeBlock
// values; quantised runs end on block boundaries so a block is never split between calls.
void Stream(absl::string_view payload, const CodecParams& params, int64_t n, DecodeSink& sink) {
  std::array<float, kDecodeBlock> values;
  std::array<uint32_t, kDecodeBlock> indices;
  const char* p = payload.data();
  switch (params.encoding) {
    case Encoding::kF32:
      if (reinterpret_cast<uintptr_t>(p) % alignof(float) == 0) {
        // Staged payloads (a string's buffer, a mapped part file) are aligned: the sink reads
        // the floats where they lie, saving a copy of every block.
        const float* f = reinterpret_cast<const float*>(p);
        for (int64_t off = 0; off < n; off += kDecodeBlock) {
          const int64_t len = std::min(kDecodeBlock, n - off);
          sink.Dense(off, absl::MakeConstSpan(f + off, static_cast<size_t>(len)));
        }
        return;
      }
      for (int64_t off = 0; off < n; off += kDecodeBlock) {
        const int64_t len = std::min(kDecodeBlock, n - off);
        std::memcpy(values.data(), p + 4 * off, static_cast<size_t>(4 * len));
        sink.Dense(off, absl::MakeConstSpan(values.data(), static_cast<size_t>(len)));
      }
      return;
    case Encoding::kF16: {
      const char* body = p + kHeaderBytes;
      std::array<uint16_t, kDecodeBlock> halves;
      for (int64_t off = 0; off < n; off += kDecodeBlock) {
        const int64_t len = std::min(kDecodeBlock, n - off);
        // Copy the halves out first: an aligned array lets the conversion loop vectorise.
        std::memcpy(halves.data(), body + 2 * off, static_cast<size_t>(2 * len));
        for (int64_t i = 0; i < len; ++i) values[i] = HalfToFloat(halves[i]);
        sink.Dense(off, absl::MakeConstSpan(values.data(), static_cast<size_t>(len)));
      }
      return;
    }
    case Encoding::kInt8: {
      const int64_t block = params.block_size;
      // Whole quantisation blocks per run: at least one, even if a block exceeds the buffer.
      const int64_t per_run = std::max<int64_t>(1, kDecodeBlock / block) * block;
      std::vector<float> big;
      float* out = values.data();
      if (per_run > kDecodeBlock) {
        big.resize(static_cast<size_t>(per_run));
        out = big.data();
      }
      const char* q = p + kHeaderBytes;
      for (int64_t off = 0; off < n; off += per_run) {
        const int64_t len = std::min(per_run, n - off);
        q = Dequantise(q, block, len, out);
        sink.Dense(off, absl::MakeConstSpan(out, static_cast<size_t>(len)));
      }
      return;
    }
    case Encoding::kTopK:
    case Encoding::kTopKInt8: {
      const int64_t k = TopKCount(n, params.topk_fraction);
      const char* idx = p + kHeaderBytes;
      const char* vals = idx + 4 * k;
      const bool quantised = params.encoding == Encoding::kTopKInt8;
      const int64_t block = params.block_size;
      const int64_t per_run =
          quantised ? std::max<int64_t>(1, kDecodeBlock / block) * block : kDecodeBlock;
      std::vector<float> big_values;
      std::vector<uint32_t> big_indices;
      float* out_values = values.data();
      uint32_t* out_indices = indices.data();
      if (per_run > kDecodeBlock) {
        big_values.resize(static_cast<size_t>(per_run));
        big_indices.resize(static_cast<size_t>(per_run));
        out_values = big_values.data();
        out_indices = big_indices.data();
      }
      for (int64_t off = 0; off < k; off += per_run) {
        const int64_t len = std::min(per_run, k - off);
        std::memcpy(out_indices, idx + 4 * off, static_cast<size_t>(4 * len));
        if (quantised) {
          vals = Dequantise(vals, block, len, out_values);
        } else {
          std::memcpy(out_values, vals + 4 * off, static_cast<size_t>(4 * len));
        }
        sink.Sparse(absl::MakeConstSpan(out_indices, static_cast<size_t>(len)),
                    absl::MakeConstSpan(out_values, static_cast<size_t>(len)));
      }
      return;
    }
  }
}

}  // namespace

absl::string_view EncodingName(Encoding encoding) {
  switch (encoding) {
    case Encoding::kF32:
      return "f32";
    case Encoding::kF16:
      return "f16";
    case Encoding::kInt8:
      return "int8";
    case Encoding::kTopK:
      return "topk";
    case Encoding::kTopKInt8:
      return "topk_int8";
  }
  return "unknown";
}

absl::StatusOr<Encoding> ParseEncoding(absl::string_view name) {
  for (Encoding e :
       {Encoding::kF32, Encoding::kF16, Encoding::kInt8, Encoding::kTopK, Encoding::kTopKInt8}) {
    if (name == EncodingName(e)) return e;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown update encoding \"", name,
                                                 "\"; expected f32, f16, int8, topk or topk_int8"));
}

absl::StatusOr<Encoding> EncodingFromWire(int value) {
  if (value < static_cast<int>(Encoding::kF32) || value > static_cast<int>(Encoding::kTopKInt8)) {
    return absl::InvalidArgumentError(
        absl::StrCat("update encoding ", value, " is not one of 1 (F32) .. 5 (TOPK_INT8)"));
  }
  return static_cast<Encoding>(value);
}

absl::Status ValidateParams(const CodecParams& params) {
  if (!EncodingFromWire(static_cast<int>(params.encoding)).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec encoding ", static_cast<int>(params.encoding), " is unknown"));
  }
  if (IsQuantised(params.encoding) &&
      (params.block_size < 1 || params.block_size > kMaxBlockSize)) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec block_size ", params.block_size, " is outside 1..", kMaxBlockSize));
  }
  if (IsTopK(params.encoding) && !(params.topk_fraction > 0 && params.topk_fraction <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec topk_fraction ", params.topk_fraction, " is outside (0, 1]"));
  }
  return absl::OkStatus();
}

int64_t TopKCount(int64_t num_elements, double fraction) {
  if (num_elements <= 0) return 0;
  const double k = std::ceil(fraction * static_cast<double>(num_elements));
  if (!(k >= 1)) return 1;
  if (k >= static_cast<double>(num_elements)) return num_elements;
  return static_cast<int64_t>(k);
}

absl::StatusOr<int64_t> EncodedSize(const CodecParams& params, int64_t num_elements) {
  if (auto st = ValidateParams(params); !st.ok()) return st;
  const int64_t n = num_elements;
  if (n < 0 || n > kMaxElements) {
    return absl::InvalidArgumentError(
        absl::StrCat("update has ", n, " elements; at most ", kMaxElements, " are supported"));
  }
  const int64_t k = TopKCount(n, params.topk_fraction);
  switch (params.encoding) {
    case Encoding::kF32:
      return 4 * n;
    case Encoding::kF16:
      return kHeaderBytes + 2 * n;
    case Encoding::kInt8:
      return kHeaderBytes + QuantisedBytes(n, params.block_size);
    case Encoding::kTopK:
      return kHeaderBytes + 8 * k;
    case Encoding::kTopKInt8:
      return kHeaderBytes + 4 * k + QuantisedBytes(k, params.block_size);
  }
  return absl::InternalError("unreachable encoding");
}

absl::StatusOr<std::string> Encode(absl::Span<const float> values, const CodecParams& params,
                                   uint64_t seed) {
  const int64_t n = static_cast<int64_t>(values.size());
  absl::StatusOr<int64_t> size = EncodedSize(params, n);
  if (!size.ok()) return size.status();
  const Encoding e = params.encoding;
  if (e == Encoding::kF32) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4);
  }
  std::string out;
  out.reserve(static_cast<size_t>(*size));
  WriteHeader(ExpectedHeader(params, n), &out);
  Rng rng(seed);
  switch (e) {
    case Encoding::kF16: {
      out.resize(static_cast<size_t>(*size));
      char* p = out.data() + kHeaderBytes;
      for (int64_t i = 0; i < n; ++i) {
        std::optional<uint16_t> h = FloatToHalf(values[i]);
        if (!h.has_value()) {
          if (!std::isfinite(values[i])) return NonFiniteInput(e, i, values[i]);
          return absl::InvalidArgumentError(
              absl::StrCat("cannot encode element ", i, " (", values[i],
                           ") as f16: beyond half range (|x| < 65520 rounds to at most 65504)"));
        }
        Store<uint16_t>(p + 2 * i, *h);
      }
      break;
    }
    case Encoding::kInt8:
      for (int64_t i = 0; i < n; ++i) {
        if (!std::isfinite(values[i])) return NonFiniteInput(e, i, values[i]);
      }
      QuantiseBlocks(values, params.block_size, rng, &out);
      break;
    case Encoding::kTopK:
    case Encoding::kTopKInt8: {
      for (int64_t i = 0; i < n; ++i) {
        if (!std::isfinite(values[i])) return NonFiniteInput(e, i, values[i]);
      }
      const int64_t k = TopKCount(n, params.topk_fraction);
      const std::vector<uint32_t> idx = TopKIndices(values, k);
      out.append(reinterpret_cast<const char*>(idx.data()), idx.size() * 4);
      std::vector<float> kept(idx.size());
      for (size_t i = 0; i < idx.size(); ++i) kept[i] = values[idx[i]];
      if (e == Encoding::kTopK) {
        out.append(reinterpret_cast<const char*>(kept.data()), kept.size() * 4);
      } else {
        QuantiseBlocks(kept, params.block_size, rng, &out);
      }
      break;
    }
    case Encoding::kF32:
      break;
  }
  if (static_cast<int64_t>(out.size()) != *size) {
    return absl::InternalError(
        absl::StrCat("encoded ", out.size(), " bytes as ", EncodingName(e), "; expected ", *size));
  }
  return out;
}

absl::Status DecodeInto(absl::string_view payload, const CodecParams& params, int64_t num_elements,
                        DecodeSink& sink) {
  if (auto st = CheckPayload(payload, params, num_elements); !st.ok()) return st;
  Stream(payload, params, num_elements, sink);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> Decode(absl::string_view payload, const CodecParams& params,
                                          int64_t num_elements) {
  class Fill : public DecodeSink {
   public:
    explicit Fill(std::vector<float>* out) : out_(out) {}
    void Dense(int64_t offset, absl::Span<const float> values) override {
      std::copy(values.begin(), values.end(), out_->begin() + offset);
    }
    void Sparse(absl::Span<const uint32_t> indices, absl::Span<const float> values) override {
      for (size_t i = 0; i < indices.size(); ++i) (*out_)[indices[i]] = values[i];
    }

   private:
    std::vector<float>* out_;
  };
  if (auto st = CheckPayload(payload, params, num_elements); !st.ok()) return st;
  std::vector<float> out(static_cast<size_t>(num_elements), 0.0f);
  Fill fill(&out);
  Stream(payload, params, num_elements, fill);
  return out;
}

absl::StatusOr<UpdateStats> Inspect(absl::string_view payload, const CodecParams& params,
                                    int64_t num_elements) {
  class Measure : public DecodeSink {
   public:
    void Dense(int64_t offset, absl::Span<const float> values) override {
      // Eight independent partial sums, so the loop is not bound by the latency of one chain
      // of additions, and no branch per value: a NaN or an infinity makes the block's sum
      // non-finite (a float squared cannot overflow a double), and only then is the block
      // searched for it.
      double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      const float* v = values.data();
      const size_t n = values.size();
      size_t i = 0;
      for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; ++k) part[k] += static_cast<double>(v[i + k]) * v[i + k];
      }
      double block = 0;
      for (; i < n; ++i) block += static_cast<double>(v[i]) * v[i];
      for (double p : part) block += p;
      if (!std::isfinite(block) && first_non_finite_ < 0) {
        for (size_t j = 0; j < n; ++j) {
          if (!std::isfinite(v[j])) {
            first_non_finite_ = offset + static_cast<int64_t>(j);
            break;
          }
        }
      }
      sum_squares_ += block;
    }
    void Sparse(absl::Span<const uint32_t> indices, absl::Span<const float> values) override {
      for (size_t i = 0; i < indices.size(); ++i) Add(indices[i], values[i]);
    }
    UpdateStats Finish() const {
      UpdateStats stats;
      stats.all_finite = first_non_finite_ < 0;
      stats.first_non_finite = first_non_finite_;
      stats.l2_norm = std::sqrt(sum_squares_);
      return stats;
    }

   private:
    void Add(int64_t index, float v) {
      if (!std::isfinite(v) && first_non_finite_ < 0) first_non_finite_ = index;
      sum_squares_ += static_cast<double>(v) * v;
    }
    double sum_squares_ = 0;
    int64_t first_non_finite_ = -1;
  };
  Measure measure;
  if (auto st = DecodeInto(payload, params, num_elements, measure); !st.ok()) return st;
  return measure.Finish();
}

absl::Status AccumulateInto(absl::string_view payload, const CodecParams& params, double weight,
                            absl::Span<double> acc) {
  class Axpy : public DecodeSink {
   public:
    Axpy(double weight, absl::Span<double> acc) : weight_(weight), acc_(acc) {}
    void Dense(int64_t offset, absl::Span<const float> values) override {
      double* out = acc_.data() + offset;
      for (size_t i = 0; i < values.size(); ++i) out[i] += weight_ * values[i];
    }
    void Sparse(absl::Span<const uint32_t> indices, absl::Span<const float> values) override {
      for (size_t i = 0; i < indices.size(); ++i) acc_[indices[i]] += weight_ * values[i];
    }

   private:
    const double weight_;
    absl::Span<double> acc_;
  };
  Axpy axpy(weight, acc);
  return DecodeInto(payload, params, static_cast<int64_t>(acc.size()), axpy);
}

}  // namespace fedge::codec
