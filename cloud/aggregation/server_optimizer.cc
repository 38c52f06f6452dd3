#include "cloud/aggregation/server_optimizer.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status/status.h"
#include "glog/logging.h"

namespace fedge::cloud::aggregation {
namespace {

constexpr char kStateMagic[4] = {'F', 'S', 'V', 'O'};
constexpr uint32_t kStateVersion = 1;

bool IsPositiveFinite(double x) { return std::isfinite(x) && x > 0; }
bool IsDecay(double x) { return x >= 0 && x < 1; }  // false for NaN

absl::Status CheckSizes(absl::Span<const float> base, absl::Span<const double> delta,
                        size_t expected) {
  if (base.size() != expected || delta.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("base has ", base.size(), " values and delta ",
                                                   delta.size(), "; expected ", expected));
  }
  for (size_t i = 0; i < delta.size(); ++i) {
    if (!std::isfinite(delta[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("delta[", i, "] is ", delta[i], "; it must be finite"));
    }
  }
  return absl::OkStatus();
}

// sign(0) = 0, as in the paper: FedYogi leaves v unchanged where v_{t−1} = Δ_t².
double Sign(double x) { return x > 0 ? 1.0 : (x < 0 ? -1.0 : 0.0); }

void AppendU32(std::string& out, uint32_t x) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((x >> (8 * i)) & 0xff));
}

void AppendU64(std::string& out, uint64_t x) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((x >> (8 * i)) & 0xff));
}

void AppendF64(std::string& out, double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  AppendU64(out, bits);
}

// Reads little-endian fields from the front of a byte string; each read fails once the bytes
// run out.
class Reader {
 public:
  explicit Reader(absl::string_view bytes) : rest_(bytes) {}

  bool Bytes(size_t n, absl::string_view* out) {
    if (rest_.size() < n) return false;
    *out = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return true;
  }
  bool U32(uint32_t* out) {
    uint64_t x;
    if (!Unsigned(4, &x)) return false;
    *out = static_cast<uint32_t>(x);
    return true;
  }
  bool U64(uint64_t* out) { return Unsigned(8, out); }
  bool F64(double* out) {
    uint64_t bits;
    if (!Unsigned(8, &bits)) return false;
    std::memcpy(out, &bits, sizeof bits);
    return true;
  }
  size_t remaining() const { return rest_.size(); }

 private:
  bool Unsigned(size_t n, uint64_t* out) {
    if (rest_.size() < n) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; ++i) {
      x |= static_cast<uint64_t>(static_cast<unsigned char>(rest_[i])) << (8 * i);
    }
    rest_.remove_prefix(n);
    *out = x;
    return true;
  }

  absl::string_view rest_;
};

absl::Status Truncated(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("optimizer state is truncated in ", what));
}

}  // namespace

// PlainServerOptimizer

absl::StatusOr<std::unique_ptr<PlainServerOptimizer>> PlainServerOptimizer::Create(
    double server_lr) {
  if (!IsPositiveFinite(server_lr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("server_lr is ", server_lr, "; it must be finite and positive"));
  }
  return std::make_unique<PlainServerOptimizer>(server_lr);
}

PlainServerOptimizer::PlainServerOptimizer(double server_lr) : server_lr_(server_lr) {
  CHECK(IsPositiveFinite(server_lr)) << "server_lr " << server_lr;
}

std::string PlainServerOptimizer::name() const { return server_lr_ == 1.0 ? "none" : "sgd"; }

absl::StatusOr<FlatTensor> PlainServerOptimizer::Apply(absl::Span<const float> base,
                                                       absl::Span<const double> delta) {
  if (absl::Status s = CheckSizes(base, delta, base.size()); !s.ok()) return s;
  FlatTensor out(base.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<float>(static_cast<double>(base[i]) + server_lr_ * delta[i]);
  }
  return out;
}

absl::Status PlainServerOptimizer::LoadState(absl::string_view state) {
  if (!state.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "optimizer \"", name(), "\" is stateless; refusing ", state.size(), " bytes of state"));
  }
  return absl::OkStatus();
}

// AdaptiveServerOptimizer

absl::StatusOr<std::unique_ptr<AdaptiveServerOptimizer>> AdaptiveServerOptimizer::Create(
    Kind kind, int64_t num_elements, const AdaptiveOptions& options) {
  if (num_elements < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_elements is ", num_elements, "; it must not be negative"));
  }
  if (!IsPositiveFinite(options.server_lr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("server_lr is ", options.server_lr, "; it must be finite and positive"));
  }
  if (!IsDecay(options.beta1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("beta1 is ", options.beta1, "; it must be in [0, 1)"));
  }
  if (!IsDecay(options.beta2)) {
    return absl::InvalidArgumentError(
        absl::StrCat("beta2 is ", options.beta2, "; it must be in [0, 1)"));
  }
  if (!IsPositiveFinite(options.tau)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tau is ", options.tau, "; it must be finite and positive"));
  }
  return std::unique_ptr<AdaptiveServerOptimizer>(
      new AdaptiveServerOptimizer(kind, num_elements, options));
}

AdaptiveServerOptimizer::AdaptiveServerOptimizer(Kind kind, int64_t num_elements,
                                                 const AdaptiveOptions& options)
    : kind_(kind),
      options_(options),
      num_elements_(static_cast<size_t>(num_elements)),
      m_(static_cast<size_t>(num_elements), 0.0),
      v_(static_cast<size_t>(num_elements), options.tau * options.tau) {}

std::string AdaptiveServerOptimizer::name() const {
  switch (kind_) {
    case Kind::kAdagrad:
      return "fedadagrad";
    case Kind::kAdam:
      return "fedadam";
    case Kind::kYogi:
      return "fedyogi";
  }
  return "unknown";
}

absl::StatusOr<FlatTensor> AdaptiveServerOptimizer::Apply(absl::Span<const float> base,
                                                          absl::Span<const double> delta) {
  MutexLock lock(&mu_);
  if (absl::Status s = CheckSizes(base, delta, m_.size()); !s.ok()) return s;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double eta = options_.server_lr, tau = options_.tau;
  FlatTensor out(base.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const double d = delta[i];
    const double d2 = d * d;
    m_[i] = b1 * m_[i] + (1 - b1) * d;
    switch (kind_) {
      case Kind::kAdagrad:
        v_[i] = v_[i] + d2;
        break;
      case Kind::kAdam:
        v_[i] = b2 * v_[i] + (1 - b2) * d2;
        break;
      case Kind::kYogi:
        v_[i] = v_[i] - (1 - b2) * d2 * Sign(v_[i] - d2);
        break;
    }
    out[i] =
        static_cast<float>(static_cast<double>(base[i]) + eta * m_[i] / (std::sqrt(v_[i]) + tau));
  }
  ++rounds_;
  return out;
}

std::string AdaptiveServerOptimizer::SaveState() const {
  const std::string opt_name = name();
  MutexLock lock(&mu_);
  std::string out;
  out.reserve(sizeof kStateMagic + 8 + opt_name.size() + 16 + 16 * m_.size());
  out.append(kStateMagic, sizeof kStateMagic);
  AppendU32(out, kStateVersion);
  AppendU32(out, static_cast<uint32_t>(opt_name.size()));
  out.append(opt_name);
  AppendU64(out, static_cast<uint64_t>(m_.size()));
  AppendU64(out, static_cast<uint64_t>(rounds_));
  for (double x : m_) AppendF64(out, x);
  for (double x : v_) AppendF64(out, x);
  return out;
}

absl::Status AdaptiveServerOptimizer::LoadState(absl::string_view state) {
  const std::string opt_name = name();
  Reader in(state);
  absl::string_view magic, saved_name;
  uint32_t version = 0, name_size = 0;
  uint64_t count = 0, rounds = 0;
  if (!in.Bytes(sizeof kStateMagic, &magic)) return Truncated("the header");
  if (magic != absl::string_view(kStateMagic, sizeof kStateMagic)) {
    return absl::InvalidArgumentError("bytes are not a server optimizer state");
  }
  if (!in.U32(&version)) return Truncated("the header");
  if (version != kStateVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer state has format version ", version, "; expected ", kStateVersion));
  }
  if (!in.U32(&name_size) || !in.Bytes(name_size, &saved_name)) return Truncated("the name");
  if (saved_name != opt_name) {
    return absl::InvalidArgumentError(absl::StrCat("state belongs to optimizer \"", saved_name,
                                                   "\"; this one is \"", opt_name, "\""));
  }
  if (!in.U64(&count) || !in.U64(&rounds)) return Truncated("the header");
  const size_t expected = num_elements_;
  if (count != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("state is for ", count, " elements; the model has ", expected));
  }
  if (rounds > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("state reports ", rounds, " rounds"));
  }
  if (in.remaining() < 16 * expected) return Truncated("the moments");
  if (in.remaining() > 16 * expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer state has ", in.remaining() - 16 * expected, " trailing bytes"));
  }
  std::vector<double> m(expected), v(expected);
  for (double& x : m) in.F64(&x);
  for (double& x : v) in.F64(&x);
  for (size_t i = 0; i < expected; ++i) {
    if (!std::isfinite(m[i]) || !std::isfinite(v[i]) || v[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer state has an invalid moment at element ", i));
    }
  }
  MutexLock lock(&mu_);
  m_ = std::move(m);
  v_ = std::move(v);
  rounds_ = static_cast<int64_t>(rounds);
  return absl::OkStatus();
}

int64_t AdaptiveServerOptimizer::rounds() const {
  MutexLock lock(&mu_);
  return rounds_;
}

std::vector<double> AdaptiveServerOptimizer::first_moment() const {
  MutexLock lock(&mu_);
  return m_;
}

std::vector<double> AdaptiveServerOptimizer::second_moment() const {
  MutexLock lock(&mu_);
  return v_;
}

// Factory

absl::StatusOr<std::unique_ptr<ServerOptimizer>> MakeServerOptimizer(
    const std::string& name, int64_t num_elements, const AdaptiveOptions& options) {
  if (num_elements < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_elements is ", num_elements, "; it must not be negative"));
  }
  if (name == "none" || name == "fedavg") return std::make_unique<PlainServerOptimizer>(1.0);
  AdaptiveServerOptimizer::Kind kind;
  if (name == "fedadagrad") {
    kind = AdaptiveServerOptimizer::Kind::kAdagrad;
  } else if (name == "fedadam") {
    kind = AdaptiveServerOptimizer::Kind::kAdam;
  } else if (name == "fedyogi") {
    kind = AdaptiveServerOptimizer::Kind::kYogi;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown server optimizer \"", name,
                     "\"; known: none, fedavg, fedadagrad, fedadam, fedyogi"));
  }
  FEDGE_ASSIGN_OR_RETURN(auto optimizer,
                         AdaptiveServerOptimizer::Create(kind, num_elements, options));
  return std::unique_ptr<ServerOptimizer>(std::move(optimizer));
}

}  // namespace fedge::cloud::aggregation
