#include "fuzz/targets/targets.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "cloud/api/rest_request.h"
#include "cloud/api/upload_stage.h"
#include "cloud/models/contract.h"
#include "common/codec/codec.h"
#include "common/data/dataset.h"
#include "common/tensor/sha256.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/field_comparator.h"
#include "google/protobuf/util/message_differencer.h"

namespace fedge::fuzz {
namespace {

// A broken rule is a finding: say which and abort, so libFuzzer keeps the input.
#define FUZZ_CHECK(cond, ...)                                                          \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: check failed: %s: %s\n", __FILE__, __LINE__, #cond, \
                   absl::StrCat(__VA_ARGS__).c_str());                                 \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

// Reads the fuzzer's choices from the front of the input; past the end, zeros.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : rest_(reinterpret_cast<const char*>(data), size) {}
  uint8_t Byte() {
    if (rest_.empty()) return 0;
    const uint8_t b = static_cast<uint8_t>(rest_[0]);
    rest_.remove_prefix(1);
    return b;
  }
  uint16_t U16() { return static_cast<uint16_t>(Byte() | (Byte() << 8)); }
  absl::string_view Take(size_t n) {
    n = std::min(n, rest_.size());
    absl::string_view out = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return out;
  }
  absl::string_view rest() const { return rest_; }
  bool empty() const { return rest_.empty(); }

 private:
  absl::string_view rest_;
};

// An error is fine when it is one the interface documents and says something.
void CheckCleanError(const absl::Status& st, std::initializer_list<absl::StatusCode> allowed,
                     absl::string_view what) {
  if (st.ok()) return;
  bool known = false;
  for (absl::StatusCode code : allowed) known = known || st.code() == code;
  FUZZ_CHECK(known, what, " returned an undocumented code: ", st.ToString());
  FUZZ_CHECK(!st.message().empty(), what, " returned an error without a message");
}

bool SameValue(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

// Checks the streaming contract of DecodeInto and rebuilds the dense update from it.
class CheckingSink : public codec::DecodeSink {
 public:
  explicit CheckingSink(int64_t n) : values_(static_cast<size_t>(n), 0.0f) {}
  void Dense(int64_t offset, absl::Span<const float> values) override {
    FUZZ_CHECK(!sparse_, "Dense after Sparse");
    FUZZ_CHECK(offset == next_, "dense run at ", offset, ", expected ", next_);
    FUZZ_CHECK(static_cast<int64_t>(values.size()) <= codec::kDecodeBlock, "run too long");
    FUZZ_CHECK(offset + static_cast<int64_t>(values.size()) <= static_cast<int64_t>(values_.size()),
               "dense run past N");
    std::copy(values.begin(), values.end(), values_.begin() + offset);
    next_ = offset + static_cast<int64_t>(values.size());
    dense_ = true;
  }
  void Sparse(absl::Span<const uint32_t> indices, absl::Span<const float> values) override {
    FUZZ_CHECK(!dense_, "Sparse after Dense");
    FUZZ_CHECK(indices.size() == values.size(), "sparse batch sizes differ");
    FUZZ_CHECK(static_cast<int64_t>(indices.size()) <= codec::kDecodeBlock, "batch too long");
    for (size_t i = 0; i < indices.size(); ++i) {
      FUZZ_CHECK(static_cast<int64_t>(indices[i]) >= next_, "sparse index ", indices[i],
                 " not ascending");
      FUZZ_CHECK(indices[i] < values_.size(), "sparse index ", indices[i], " >= N");
      values_[indices[i]] = values[i];
      next_ = static_cast<int64_t>(indices[i]) + 1;
    }
    sparse_ = true;
  }
  // Dense runs must have covered [0, N).
  void Finish() const {
    if (dense_ || values_.empty()) {
      FUZZ_CHECK(sparse_ || next_ == static_cast<int64_t>(values_.size()), "dense runs covered ",
                 next_, " of ", values_.size());
    }
  }
  const std::vector<float>& values() const { return values_; }

 private:
  std::vector<float> values_;
  int64_t next_ = 0;
  bool dense_ = false;
  bool sparse_ = false;
};

}  // namespace

int FuzzCodec(const uint8_t* data, size_t size) {
  Input in(data, size);
  static constexpr int32_t kBlocks[] = {1, 2, 3, 7, 64, 256, 4096, 5000, 65536, 0, 65537, -1};
  codec::CodecParams params;
  params.encoding = static_cast<codec::Encoding>(1 + in.Byte() % 5);
  params.block_size = kBlocks[in.Byte() % (sizeof(kBlocks) / sizeof(kBlocks[0]))];
  const uint8_t f = in.Byte();
  params.topk_fraction = f == 0 ? 0.0 : f == 255 ? 1.5 : f / 254.0;
  // At most 20000 elements: several decode blocks, never much memory.
  const int64_t n = in.U16() % 20001;
  const uint8_t mode = in.Byte();
  const double weight = (mode & 0x7f) / 16.0 - 2.0;
  const bool valid_params = codec::ValidateParams(params).ok();

  if (mode & 0x80) {
    // Encode what the rest reads as floats, then decode it back.
    const absl::string_view raw = in.rest();
    std::vector<float> values(raw.size() / sizeof(float));
    if (!values.empty()) std::memcpy(values.data(), raw.data(), values.size() * sizeof(float));
    auto encoded = codec::Encode(values, params, /*seed=*/mode);
    CheckCleanError(encoded.status(), {absl::StatusCode::kInvalidArgument}, "Encode");
    if (!encoded.ok()) return 0;
    FUZZ_CHECK(valid_params, "Encode accepted invalid params");
    auto expected_size = codec::EncodedSize(params, static_cast<int64_t>(values.size()));
    FUZZ_CHECK(expected_size.ok() && *expected_size == static_cast<int64_t>(encoded->size()),
               "EncodedSize disagrees with Encode: ", encoded->size());
    auto decoded = codec::Decode(*encoded, params, static_cast<int64_t>(values.size()));
    FUZZ_CHECK(decoded.ok(), "Decode refused Encode's output: ", decoded.status().ToString());
    FUZZ_CHECK(decoded->size() == values.size(), "round trip changed N");
    if (params.encoding == codec::Encoding::kF32) {
      FUZZ_CHECK(values.empty() || std::memcmp(decoded->data(), values.data(),
                                               values.size() * sizeof(float)) == 0,
                 "f32 round trip is not lossless");
    }
    return 0;
  }

  const absl::string_view payload = in.rest();
  const auto allowed = {absl::StatusCode::kInvalidArgument, absl::StatusCode::kDataLoss};
  auto decoded = codec::Decode(payload, params, n);
  CheckCleanError(decoded.status(), allowed, "Decode");
  if (decoded.ok()) {
    FUZZ_CHECK(valid_params, "Decode accepted invalid params");
    FUZZ_CHECK(static_cast<int64_t>(decoded->size()) == n, "Decode gave ", decoded->size(),
               " values for N = ", n);
    auto size = codec::EncodedSize(params, n);
    FUZZ_CHECK(size.ok() && *size == static_cast<int64_t>(payload.size()), "Decode accepted ",
               payload.size(), " bytes, EncodedSize says ",
               size.ok() ? absl::StrCat(*size) : size.status().ToString());
  }

  CheckingSink sink(n);
  const absl::Status streamed = codec::DecodeInto(payload, params, n, sink);
  FUZZ_CHECK(streamed.ok() == decoded.ok(), "DecodeInto and Decode disagree: ", streamed.ToString(),
             " vs ", decoded.status().ToString());
  if (streamed.ok()) {
    sink.Finish();
    for (int64_t i = 0; i < n; ++i) {
      FUZZ_CHECK(SameValue(sink.values()[i], (*decoded)[i]), "DecodeInto differs at ", i);
    }
  }

  auto stats = codec::Inspect(payload, params, n);
  CheckCleanError(stats.status(), allowed, "Inspect");
  FUZZ_CHECK(stats.ok() == decoded.ok(), "Inspect and Decode disagree: ", stats.status().ToString(),
             " vs ", decoded.status().ToString());
  if (stats.ok()) {
    double sum = 0;
    int64_t first_bad = -1;
    for (int64_t i = 0; i < n; ++i) {
      const double v = (*decoded)[i];
      if (!std::isfinite(v) && first_bad < 0) first_bad = i;
      sum += v * v;
    }
    FUZZ_CHECK(stats->all_finite == (first_bad < 0), "Inspect's all_finite is wrong");
    FUZZ_CHECK(stats->first_non_finite == first_bad, "Inspect's first_non_finite is ",
               stats->first_non_finite, ", expected ", first_bad);
    if (first_bad < 0 && std::isfinite(sum)) {
      const double norm = std::sqrt(sum);
      FUZZ_CHECK(std::abs(stats->l2_norm - norm) <= 1e-9 * norm + 1e-30, "Inspect's norm ",
                 stats->l2_norm, " differs from ", norm);
    }
  }

  std::vector<double> acc(static_cast<size_t>(n), 0.5);
  const absl::Status accumulated =
      codec::AccumulateInto(payload, params, weight, absl::MakeSpan(acc));
  CheckCleanError(accumulated, allowed, "AccumulateInto");
  FUZZ_CHECK(accumulated.ok() == decoded.ok(),
             "AccumulateInto and Decode disagree: ", accumulated.ToString(), " vs ",
             decoded.status().ToString());
  for (int64_t i = 0; i < n; ++i) {
    const double expected = accumulated.ok() ? 0.5 + weight * (*decoded)[i] : 0.5;
    FUZZ_CHECK(SameValue(acc[i], expected), "AccumulateInto left ", acc[i], " at ", i,
               ", expected ", expected);
  }
  return 0;
}

int FuzzCsv(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint8_t choice = in.Byte();
  data::CsvOptions options;
  if (choice & 1) options.label_column = "y";
  if (choice & 2) options.label_names = {"a", "b", "c"};
  auto parsed = data::ParseCsv(in.rest(), options, "fuzz.csv");
  CheckCleanError(parsed.status(), {absl::StatusCode::kInvalidArgument}, "ParseCsv");
  if (!parsed.ok()) {
    FUZZ_CHECK(absl::StrContains(parsed.status().message(), "fuzz.csv"),
               "the error does not name the source: ", parsed.status().message());
    return 0;
  }
  const data::Dataset& d = *parsed;
  FUZZ_CHECK(static_cast<int64_t>(d.features.size()) == d.size() * d.num_features(),
             d.features.size(), " features for ", d.size(), " rows of ", d.num_features());
  for (int64_t label : d.labels) {
    FUZZ_CHECK(label >= 0, "negative label ", label);
    if (!options.label_names.empty()) {
      FUZZ_CHECK(label < static_cast<int64_t>(options.label_names.size()), "label ", label,
                 " beyond the names");
    }
  }
  for (float v : d.features) FUZZ_CHECK(std::isfinite(v), "non-finite feature ", v);
  const data::FeatureStats stats = data::ComputeStats(d);
  FUZZ_CHECK(static_cast<int64_t>(stats.mean.size()) == d.num_features() &&
                 static_cast<int64_t>(stats.std.size()) == d.num_features(),
             "stats have the wrong size");
  data::Dataset train, holdout;
  data::Split(d, 0.25, /*seed=*/choice, &train, &holdout);
  FUZZ_CHECK(train.size() + holdout.size() == d.size(), "Split lost rows");
  return 0;
}

namespace {

// One staging attempt: chunks read from the input until it ends or a chunk is refused. Returns
// what the stage holds; `expected` is what it should hold.
struct Attempt {
  std::string expected;
  bool failed = false;
};

void FeedChunks(Input& in, cloud::api::UploadStage& stage, int64_t total, Attempt& attempt,
                int max_chunks) {
  for (int i = 0; i < max_chunks && !in.empty(); ++i) {
    const uint8_t op = in.Byte();
    int64_t offset = stage.size();
    switch (op % 8) {
      case 5:
        offset += 1;
        break;
      case 6:
        offset -= 1;
        break;
      case 7:
        offset = static_cast<int64_t>(in.U16()) - 100;
        break;
      default:
        break;
    }
    size_t len = in.Byte();
    if (op & 0x80) len = len * 64;
    if ((op & 0x78) == 0x78) len = cloud::api::kMaxChunkBytes + 1;
    std::string chunk(in.Take(len));
    // Past the input's end the chunk is padded, so lengths stay the fuzzer's choice.
    chunk.resize(len, 'x');
    const int64_t before = stage.size();
    const bool should_fit = offset == before && len >= 1 &&
                            static_cast<int64_t>(len) <= cloud::api::kMaxChunkBytes &&
                            before + static_cast<int64_t>(len) <= total;
    const absl::Status st = stage.AddChunk(offset, chunk);
    CheckCleanError(st,
                    {absl::StatusCode::kInvalidArgument, absl::StatusCode::kResourceExhausted,
                     absl::StatusCode::kDataLoss},
                    "AddChunk");
    FUZZ_CHECK(stage.size() <= std::max<int64_t>(total, 0), "size ", stage.size(),
               " exceeds the total ", total);
    if (st.ok()) {
      FUZZ_CHECK(stage.size() == before + static_cast<int64_t>(len), "size did not grow by ", len);
      attempt.expected += chunk;
    } else {
      FUZZ_CHECK(stage.size() == before, "a refused chunk changed the size");
    }
    // Only the first chunk may open at an offset other than the staged size (a resume).
    if (before > 0 || stage.resumed()) {
      FUZZ_CHECK(st.ok() == should_fit, "AddChunk(", offset, ", ", len, ") at size ", before,
                 " of ", total, " gave ", st.ToString());
    }
    if (!st.ok()) {
      attempt.failed = true;
      return;
    }
  }
}

void CheckStaged(cloud::api::UploadStage& stage, const std::string& expected) {
  const std::string digest = stage.FinishDigest();
  auto contents = stage.Contents();
  FUZZ_CHECK(contents.ok(), "Contents: ", contents.status().ToString());
  FUZZ_CHECK(*contents == expected, "staged ", contents->size(), " bytes differ from the ",
             expected.size(), " bytes sent");
  FUZZ_CHECK(digest == Sha256Hex(*contents), "FinishDigest differs from Sha256Hex");
}

// A directory of this process's own for part files.
const std::string& PartDir() {
  static const std::string* dir = [] {
    std::string templ =
        (std::filesystem::temp_directory_path() / "fedge-fuzz-upload-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    return new std::string(templ);
  }();
  return *dir;
}

}  // namespace

int FuzzUploadChunks(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint8_t mode = in.Byte();
  // Bit 6: a negative declared total, which no upload can fit.
  const int64_t total = (mode & 0x40) ? -static_cast<int64_t>(in.U16()) - 1 : in.U16() % 16384;
  const bool with_file = mode & 1;
  const bool resume = with_file && (mode & 2);
  const std::string part = with_file ? PartDir() + "/part" : "";
  if (with_file) std::filesystem::remove(part);

  Attempt first;
  {
    cloud::api::UploadStage stage(part, total);
    FeedChunks(in, stage, total, first, resume ? 1 + (mode >> 2) % 8 : 1 << 30);
    if (!resume) {
      CheckStaged(stage, first.expected);
      stage.Discard();
      return 0;
    }
    if (first.expected.empty()) stage.Discard();
    // The stage goes away without Discard, as when a stream breaks: the part stays.
  }
  // A second attempt continues from what the part holds.
  cloud::api::UploadStage second(part, total);
  Attempt rest;
  rest.expected = first.expected;
  const int64_t held = static_cast<int64_t>(first.expected.size());
  if (held > 0) {
    const absl::Status st = second.AddChunk(held + (mode & 0x80 ? 1 : 0), "r");
    if (mode & 0x80) {
      FUZZ_CHECK(!st.ok(), "a resume at the wrong offset was accepted");
      second.Discard();
      return 0;
    }
    const bool fits = held + 1 <= total;
    FUZZ_CHECK(st.ok() == fits, "resume at ", held, " of ", total, ": ", st.ToString());
    if (!st.ok()) {
      second.Discard();
      return 0;
    }
    FUZZ_CHECK(second.resumed(), "a resume at ", held, " is not marked resumed");
    rest.expected += "r";
  }
  FeedChunks(in, second, total, rest, 1 << 30);
  CheckStaged(second, rest.expected);
  second.Discard();
  return 0;
}

int FuzzRestJson(const uint8_t* data, size_t size) {
  Input in(data, size);
  static const auto* kMethods = [] {
    auto* names = new std::vector<std::string>;
    const google::protobuf::MethodDescriptor* any = *cloud::api::FindAdminMethod("ListModels");
    const google::protobuf::ServiceDescriptor* service = any->service();
    for (int i = 0; i < service->method_count(); ++i) names->push_back(service->method(i)->name());
    names->push_back("NoSuchMethod");
    return names;
  }();
  const std::string& name = (*kMethods)[in.Byte() % kMethods->size()];
  auto method = cloud::api::FindAdminMethod(name);
  if (!method.ok()) {
    FUZZ_CHECK(method.status().code() == absl::StatusCode::kNotFound, method.status().ToString());
    return 0;
  }
  auto request = cloud::api::ParseRequestBody(**method, in.rest());
  CheckCleanError(request.status(), {absl::StatusCode::kInvalidArgument}, "ParseRequestBody");
  if (request.ok()) {
    FUZZ_CHECK((*request)->GetDescriptor() == (*method)->input_type(), "wrong message type");
    // What was accepted serializes, as the gateway does next.
    std::string wire;
    FUZZ_CHECK((*request)->SerializeToString(&wire), "accepted request does not serialize");
  }
  return 0;
}

int FuzzContract(const uint8_t* data, size_t size) {
  const absl::string_view json(reinterpret_cast<const char*>(data), size);
  auto contract = cloud::models::ContractFromJson(json);
  CheckCleanError(contract.status(), {absl::StatusCode::kInvalidArgument}, "ContractFromJson");
  if (!contract.ok()) return 0;
  const absl::Status checked = cloud::models::CheckContract(*contract);
  CheckCleanError(checked, {absl::StatusCode::kInvalidArgument}, "CheckContract");
  if (checked.ok()) {
    // A checked contract normalizes every feature to a finite value.
    for (float m : contract->normalization().mean()) {
      FUZZ_CHECK(std::isfinite(m), "CheckContract accepted the mean ", m);
    }
    for (float s : contract->normalization().std()) {
      FUZZ_CHECK(std::isfinite(s) && s > 0, "CheckContract accepted the std ", s);
    }
  }
  // What we store reads back as the same contract.
  const std::string stored = cloud::models::ContractToJson(*contract);
  auto again = cloud::models::ContractFromJson(stored);
  FUZZ_CHECK(again.ok(), "ContractToJson's output does not read back: ", again.status().ToString(),
             " in ", stored);
  // Equal as values: JSON keeps neither the sign of a zero nor a NaN's bits.
  google::protobuf::util::DefaultFieldComparator comparator;
  comparator.set_treat_nan_as_equal(true);
  google::protobuf::util::MessageDifferencer differencer;
  differencer.set_field_comparator(&comparator);
  FUZZ_CHECK(differencer.Compare(*again, *contract),
             "the contract changed in a JSON round trip: ", stored);
  return 0;
}

}  // namespace fedge::fuzz
