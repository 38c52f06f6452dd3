#ifndef FEDGE_COMMON_CODEC_CODEC_H_
#define FEDGE_COMMON_CODEC_CODEC_H_

// Encodings of a model update: a float32 delta vector (local − base) of a model's N elements.
// The byte layouts are described in docs/protocol.md ("Update encodings").
//
// Every encoding except F32 starts with a 20-byte header naming the encoding, N, k and the
// block size, so a decoder refuses a payload that was not made for what the round expects.
// F32 stays headerless: exactly N little-endian float32 values, byte-compatible with
// EncodeF32 in common/tensor/flat.h.
//
// Decoding never trusts the payload: a payload whose header does not match the expected
// format is INVALID_ARGUMENT naming both; a payload of the wrong length, with indices out of
// range or not ascending, or with an impossible quantised value or scale is DATA_LOSS. All
// functions here are pure and thread-compatible.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace fedge::codec {

// The numbers are those of fedge.v1.Encoding, so a wire value converts with a static_cast
// after EncodingFromWire has checked it.
enum class Encoding : int {
  kF32 = 1,       // little-endian float32; lossless, 4 bytes per element
  kF16 = 2,       // IEEE half, nearest-even; 2 bytes per element, relative error <= 2^-11
  kInt8 = 3,      // per-block scale + stochastically rounded int8; ~1 byte per element
  kTopK = 4,      // the k largest-magnitude entries: uint32 index + float32 value each
  kTopKInt8 = 5,  // top-k with the kept values int8-quantised per block
};

// "f32", "f16", "int8", "topk", "topk_int8".
absl::string_view EncodingName(Encoding encoding);
// Accepts the names above; INVALID_ARGUMENT listing them otherwise.
absl::StatusOr<Encoding> ParseEncoding(absl::string_view name);
// INVALID_ARGUMENT for values outside 1..5 (including ENCODING_UNSPECIFIED = 0).
absl::StatusOr<Encoding> EncodingFromWire(int value);

// How a round wants its updates encoded. Sender and receiver must agree on all fields that
// apply to the encoding; the payload's header lets the receiver check that they did.
struct CodecParams {
  Encoding encoding = Encoding::kF32;
  // kInt8 and kTopKInt8: values sharing one float32 scale, 1..65536.
  int32_t block_size = 256;
  // kTopK and kTopKInt8: the fraction of entries kept, in (0, 1].
  double topk_fraction = 0.01;
};

// The largest N an update may have (top-k indices are uint32).
inline constexpr int64_t kMaxElements = 0xFFFFFFFFll;
// Bytes of the header that every encoding but F32 starts with.
inline constexpr int64_t kHeaderBytes = 20;

// INVALID_ARGUMENT naming the offending field, for parameters outside their ranges.
absl::Status ValidateParams(const CodecParams& params);

// k = ceil(fraction · N), computed in double and kept within [min(N, 1), N].
int64_t TopKCount(int64_t num_elements, double fraction);

// The exact payload size for N elements, header included. Lets the cloud check an upload's
// declared total size before any payload byte arrives.
absl::StatusOr<int64_t> EncodedSize(const CodecParams& params, int64_t num_elements);

// Encodes `values`. `seed` drives the stochastic rounding of kInt8 and kTopKInt8 (equal seeds
// give equal bytes) and is ignored by the other encodings. F32 passes any value through; the
// lossy encodings refuse NaN and infinity, and F16 refuses values beyond half range
// (|x| >= 65520), with INVALID_ARGUMENT naming the element's index and value.
absl::StatusOr<std::string> Encode(absl::Span<const float> values, const CodecParams& params,
                                   uint64_t seed);

// Decodes a whole payload into N floats (zeros where top-k dropped an entry).
absl::StatusOr<std::vector<float>> Decode(absl::string_view payload, const CodecParams& params,
                                          int64_t num_elements);

// Receives a decoded update in pieces. The spans point into a small buffer that is reused
// for the next call, so a sink consumes them before returning. Dense encodings call Dense
// with consecutive runs that cover [0, N) in order; top-k encodings call Sparse with
// ascending, distinct indices below N (entries not delivered are zero).
class DecodeSink {
 public:
  virtual ~DecodeSink() = default;
  virtual void Dense(int64_t offset, absl::Span<const float> values) = 0;
  virtual void Sparse(absl::Span<const uint32_t> indices, absl::Span<const float> values) = 0;
};

// Values handed to a sink per call, at most.
inline constexpr int64_t kDecodeBlock = 4096;

// Streams a payload into `sink` through a buffer of kDecodeBlock values, without a full-size
// copy. The whole payload is checked before the sink sees anything, so a refused payload
// leaves the caller's state untouched.
absl::Status DecodeInto(absl::string_view payload, const CodecParams& params, int64_t num_elements,
                        DecodeSink& sink);

struct UpdateStats {
  double l2_norm = 0;  // of the decoded update, accumulated in double
  bool all_finite = true;
  int64_t first_non_finite = -1;  // index of the first NaN or infinity, -1 if none
};

// Norm and finiteness of the decoded update, streamed as in DecodeInto; for validating an
// update before folding it.
absl::StatusOr<UpdateStats> Inspect(absl::string_view payload, const CodecParams& params,
                                    int64_t num_elements);

// acc += weight · decoded, streamed as in DecodeInto; N is acc.size(). On error acc is
// unchanged.
absl::Status AccumulateInto(absl::string_view payload, const CodecParams& params, double weight,
                            absl::Span<double> acc);

}  // namespace fedge::codec

#endif  // FEDGE_COMMON_CODEC_CODEC_H_
