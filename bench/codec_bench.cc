// Throughput of the update encodings against memcpy of the same float32 vector, measured in
// the same run, with each encoding's size against F32 and its relative L2 error. Throughput is
// in GB/s of float32 input (4 bytes per element), the best of --reps repetitions.
//
//   build/bench/codec_bench [--elements=4000000] [--reps=5]
//
// encode:     Encode() of the whole delta into a payload.
// decode:     DecodeInto() into a preallocated float vector (the edge's local decode).
// accumulate: AccumulateInto() a float64 accumulator, the cloud's fold.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/codec/codec.h"

namespace {

using fedge::codec::CodecParams;
using fedge::codec::Encoding;

template <typename F>
double BestSeconds(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto start = std::chrono::steady_clock::now();
    f();
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    best = std::min(best, took.count());
  }
  return best;
}

class CopySink : public fedge::codec::DecodeSink {
 public:
  explicit CopySink(std::vector<float>* out) : out_(out) {}
  void Dense(int64_t offset, absl::Span<const float> values) override {
    std::memcpy(out_->data() + offset, values.data(), values.size() * sizeof(float));
  }
  void Sparse(absl::Span<const uint32_t> indices, absl::Span<const float> values) override {
    for (size_t i = 0; i < indices.size(); ++i) (*out_)[indices[i]] = values[i];
  }

 private:
  std::vector<float>* out_;
};

}  // namespace

int main(int argc, char** argv) {
  long elements = 4000000;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--elements=", 11) == 0) {
      elements = std::atol(argv[i] + 11);
    } else if (std::strncmp(argv[i], "--reps=", 7) == 0) {
      reps = std::atoi(argv[i] + 7);
    } else {
      std::fprintf(stderr, "unknown flag %s\nusage: codec_bench [--elements=N] [--reps=R]\n",
                   argv[i]);
      return 2;
    }
  }
  if (elements < 1 || reps < 1) {
    std::fprintf(stderr, "--elements and --reps must be positive\n");
    return 2;
  }
  const size_t n = static_cast<size_t>(elements);
  std::mt19937 gen(1);
  std::normal_distribution<float> dist(0.0f, 1e-3f);
  std::vector<float> delta(n);
  for (float& x : delta) x = dist(gen);
  double delta_sq = 0;
  for (float x : delta) delta_sq += static_cast<double>(x) * x;
  const double gb = 4.0 * static_cast<double>(n) / 1e9;

  std::vector<float> copy(n);
  const double memcpy_s =
      BestSeconds(reps, [&] { std::memcpy(copy.data(), delta.data(), n * sizeof(float)); });
  std::printf("delta: %zu float32 values (%.1f MB), best of %d\n", n, 4.0 * n / 1e6, reps);
  std::printf("memcpy baseline: %.2f GB/s\n", gb / memcpy_s);
  std::printf("%-18s %12s %8s %10s %10s %10s %12s %10s\n", "encoding", "bytes", "vs_f32",
              "enc_GB/s", "dec_GB/s", "acc_GB/s", "dec/memcpy", "rel_err");

  auto params = [](Encoding e, double fraction) {
    CodecParams p;
    p.encoding = e;
    p.block_size = 256;
    p.topk_fraction = fraction;
    return p;
  };
  const struct {
    const char* label;
    CodecParams params;
  } cases[] = {
      {"f32", params(Encoding::kF32, 0.01)},
      {"f16", params(Encoding::kF16, 0.01)},
      {"int8 (b=256)", params(Encoding::kInt8, 0.01)},
      {"topk (1%)", params(Encoding::kTopK, 0.01)},
      {"topk_int8 (1%)", params(Encoding::kTopKInt8, 0.01)},
  };
  std::vector<double> acc(n, 0.0);
  for (const auto& c : cases) {
    std::string payload;
    bool ok = true;
    const double enc_s = BestSeconds(reps, [&] {
      absl::StatusOr<std::string> p = fedge::codec::Encode(delta, c.params, 7);
      ok = ok && p.ok();
      if (p.ok()) payload = *std::move(p);
    });
    std::vector<float> decoded(n, 0.0f);
    const double dec_s = BestSeconds(reps, [&] {
      CopySink sink(&decoded);
      ok = ok && fedge::codec::DecodeInto(payload, c.params, elements, sink).ok();
    });
    const double acc_s = BestSeconds(reps, [&] {
      ok = ok && fedge::codec::AccumulateInto(payload, c.params, 0.5, absl::MakeSpan(acc)).ok();
    });
    if (!ok) {
      std::fprintf(stderr, "%s: encoding or decoding failed\n", c.label);
      return 1;
    }
    double err_sq = 0;
    for (size_t i = 0; i < n; ++i) {
      const double d = static_cast<double>(decoded[i]) - delta[i];
      err_sq += d * d;
    }
    std::printf("%-18s %12zu %8.3f %10.2f %10.2f %10.2f %12.2f %10.2e\n", c.label, payload.size(),
                static_cast<double>(payload.size()) / (4.0 * n), gb / enc_s, gb / dec_s, gb / acc_s,
                memcpy_s / dec_s, std::sqrt(err_sq / delta_sq));
  }
  return 0;
}
