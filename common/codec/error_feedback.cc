#include "common/codec/error_feedback.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace fedge::codec {
namespace {

namespace fs = std::filesystem;

// Residual file: magic "FEDGERF1", uint64 count, count float32 values, then a uint64 FNV-1a
// hash of everything before it. Little-endian.
constexpr absl::string_view kFileMagic = "FEDGERF1";
constexpr absl::string_view kSuffix = ".residual";
constexpr size_t kMaxHashLength = 128;

uint64_t Fnv1a(absl::string_view bytes) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return h;
}

std::string Serialise(absl::Span<const float> values) {
  std::string out(kFileMagic);
  const uint64_t count = values.size();
  out.append(reinterpret_cast<const char*>(&count), sizeof(count));
  out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  const uint64_t hash = Fnv1a(out);
  out.append(reinterpret_cast<const char*>(&hash), sizeof(hash));
  return out;
}

absl::StatusOr<std::vector<float>> Parse(absl::string_view bytes) {
  const size_t fixed = kFileMagic.size() + 2 * sizeof(uint64_t);
  if (bytes.size() < fixed || !absl::StartsWith(bytes, kFileMagic)) {
    return absl::DataLossError(
        absl::StrCat("not a residual file (", bytes.size(), " bytes, no FEDGERF1 header)"));
  }
  uint64_t count;
  std::memcpy(&count, bytes.data() + kFileMagic.size(), sizeof(count));
  if (count > (bytes.size() - fixed) / sizeof(float) ||
      bytes.size() != fixed + count * sizeof(float)) {
    return absl::DataLossError(
        absl::StrCat("residual file declares ", count, " values but has ", bytes.size(), " bytes"));
  }
  uint64_t hash;
  std::memcpy(&hash, bytes.data() + bytes.size() - sizeof(hash), sizeof(hash));
  if (hash != Fnv1a(bytes.substr(0, bytes.size() - sizeof(hash)))) {
    return absl::DataLossError("residual file checksum mismatch");
  }
  std::vector<float> values(count);
  std::memcpy(values.data(), bytes.data() + kFileMagic.size() + sizeof(count),
              count * sizeof(float));
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return absl::DataLossError(absl::StrCat("residual value ", i, " is ", values[i]));
    }
  }
  return values;
}

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status FsyncPath(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) return ErrnoError("opening", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("fsyncing", path);
  return absl::OkStatus();
}

// Writes `bytes` to `path` atomically: a temporary file, fsynced, renamed over `path`, and
// the directory fsynced so the rename itself survives a crash.
absl::Status WriteAtomically(const std::string& dir, const std::string& path,
                             absl::string_view bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("creating", tmp);
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status st = ErrnoError("writing", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return st;
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    absl::Status st = ErrnoError("fsyncing", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return st;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status st = ErrnoError("renaming into place", path);
    ::unlink(tmp.c_str());
    return st;
  }
  return FsyncPath(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

// Keys become file names, so they must not be able to name another directory.
absl::Status CheckHash(absl::string_view hash) {
  bool ok = !hash.empty() && hash.size() <= kMaxHashLength;
  for (char c : hash) {
    ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                c == '_' || c == '-');
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat("schema hash \"", hash, "\" must be 1..",
                                                   kMaxHashLength, " of [A-Za-z0-9_-]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ErrorFeedback>> ErrorFeedback::Open(Options options) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError("error feedback needs a directory for its residuals");
  }
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("creating residual directory ", options.dir, ": ", ec.message()));
  }
  std::unique_ptr<ErrorFeedback> feedback(new ErrorFeedback(std::move(options.dir)));
  if (auto st = feedback->LoadAll(); !st.ok()) return st;
  return feedback;
}

absl::Status ErrorFeedback::LoadAll() {
  MutexLock lock(&mu_);
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (absl::EndsWith(name, ".tmp")) {
      // A write that never reached its rename; the previous file, if any, is still whole.
      fs::remove(it->path(), ec);
      ec.clear();
      continue;
    }
    if (!absl::EndsWith(name, kSuffix)) continue;
    const std::string hash = name.substr(0, name.size() - kSuffix.size());
    std::ifstream in(it->path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    absl::StatusOr<std::vector<float>> values =
        in.bad() ? absl::DataLossError("read error") : Parse(bytes);
    if (!CheckHash(hash).ok() || !values.ok()) {
      LOG(WARNING) << "discarding residual file " << it->path().string() << ": "
                   << (values.ok() ? "not named by a schema hash" : values.status().ToString());
      fs::remove(it->path(), ec);
      ec.clear();
      continue;
    }
    residuals_[hash] = *std::move(values);
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("listing residual directory ", dir_, ": ", ec.message()));
  }
  return absl::OkStatus();
}

std::string ErrorFeedback::PathFor(absl::string_view key) const {
  return absl::StrCat(dir_, "/", key, kSuffix);
}

absl::StatusOr<std::string> ErrorFeedback::Compress(absl::string_view key,
                                                    absl::Span<const float> delta,
                                                    const CodecParams& params, uint64_t seed) {
  if (auto st = CheckHash(key); !st.ok()) return st;
  MutexLock lock(&mu_);
  std::vector<float> sum(delta.begin(), delta.end());
  auto held = residuals_.find(key);
  if (held != residuals_.end()) {
    if (held->second.size() == delta.size()) {
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += held->second[i];
    } else {
      LOG(WARNING) << "discarding the residual of " << key << ": it has "
                   << held->second.size() << " values, the update " << delta.size();
    }
  }
  for (size_t i = 0; i < sum.size(); ++i) {
    if (!std::isfinite(sum[i])) {
      return absl::InvalidArgumentError(absl::StrCat("update element ", i, " plus its residual is ",
                                                     sum[i], "; refusing to encode it"));
    }
  }
  absl::StatusOr<std::string> payload = Encode(sum, params, seed);
  if (!payload.ok()) return payload.status();
  absl::StatusOr<std::vector<float>> decoded =
      Decode(*payload, params, static_cast<int64_t>(sum.size()));
  if (!decoded.ok()) {
    return absl::InternalError(
        absl::StrCat("decoding our own payload: ", decoded.status().ToString()));
  }
  for (size_t i = 0; i < sum.size(); ++i) sum[i] -= (*decoded)[i];
  if (auto st = WriteAtomically(dir_, PathFor(key), Serialise(sum)); !st.ok()) {
    return st;
  }
  residuals_[key] = std::move(sum);
  return payload;
}

std::vector<float> ErrorFeedback::Residual(absl::string_view key) const {
  MutexLock lock(&mu_);
  auto it = residuals_.find(key);
  return it == residuals_.end() ? std::vector<float>() : it->second;
}

absl::Status ErrorFeedback::Clear(absl::string_view key) {
  if (auto st = CheckHash(key); !st.ok()) return st;
  MutexLock lock(&mu_);
  const std::string path = PathFor(key);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoError("removing", path);
  residuals_.erase(key);
  return absl::OkStatus();
}

}  // namespace fedge::codec

namespace fedge::codec {

absl::Status ErrorFeedback::KeepOnly(absl::string_view key) {
  std::vector<std::string> others;
  {
    MutexLock lock(&mu_);
    for (const auto& [held, values] : residuals_) {
      if (held != key) others.push_back(held);
    }
  }
  for (const std::string& other : others) {
    if (absl::Status st = Clear(other); !st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace fedge::codec
