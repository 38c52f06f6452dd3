#include "cloud/api/upload_stage.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fedge::cloud::api {
namespace {

// Chunks waiting for the digest thread; past this the caller waits, which slows the stream.
constexpr size_t kMaxQueued = 16;

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string why = std::strerror(errno);
      if (errno == ENOSPC || errno == EDQUOT) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "the coordinator cannot stage the upload (", path, ": ", why, "); try again later"));
      }
      return absl::InternalError(absl::StrCat("cannot write ", path, ": ", why));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

}  // namespace

UploadStage::UploadStage(std::string part_path, int64_t total_size)
    : part_path_(std::move(part_path)), total_size_(total_size) {}

UploadStage::~UploadStage() {
  {
    MutexLock lock(&mu_);
    closed_ = true;
    changed_.SignalAll();
  }
  if (digester_.joinable()) digester_.join();
  if (map_ != nullptr) ::munmap(map_, map_size_);
  if (fd_ >= 0) ::close(fd_);
}

absl::Status UploadStage::Open(int64_t offset) {
  // Checked here, not left to the caller: a negative size would become a huge reservation.
  if (total_size_ < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the upload declares ", total_size_, " bytes: sizes are never negative"));
  }
  if (part_path_.empty()) {
    if (offset != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("the upload resumes at offset ", offset,
                       " but the cloud holds 0 bytes of it; ask UploadOffset"));
    }
    memory_.reserve(static_cast<size_t>(total_size_));
  } else {
    const int flags = O_RDWR | O_CREAT | O_CLOEXEC | (offset > 0 ? O_APPEND : O_TRUNC);
    fd_ = ::open(part_path_.c_str(), flags, 0600);
    if (fd_ < 0) {
      return absl::InternalError(
          absl::StrCat("cannot open ", part_path_, ": ", std::strerror(errno)));
    }
    struct stat st;
    const int64_t held = ::fstat(fd_, &st) == 0 ? static_cast<int64_t>(st.st_size) : -1;
    if (offset > 0 && held != offset) {
      return absl::InvalidArgumentError(
          absl::StrCat("the upload resumes at offset ", offset, " but the cloud holds ",
                       std::max<int64_t>(held, 0), " bytes of it; ask UploadOffset"));
    }
    if (held > total_size_) {
      Discard();
      return absl::DataLossError("the held part of the upload is unreadable; send it all again");
    }
    // The held part is digested here, before the new chunks, in 1 MiB reads.
    std::string buffer(1 << 20, '\0');
    for (int64_t at = 0; at < held;) {
      const ssize_t n = ::pread(fd_, buffer.data(), buffer.size(), at);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        Discard();
        return absl::DataLossError("the held part of the upload is unreadable; send it all again");
      }
      digest_.Update(absl::string_view(buffer.data(), static_cast<size_t>(n)));
      at += n;
    }
    size_ = held;
  }
  digester_ = std::thread([this] { DigestLoop(); });
  opened_ = true;
  return absl::OkStatus();
}

absl::Status UploadStage::AddChunk(int64_t offset, std::string data) {
  if (!opened_) {
    if (offset < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk at offset ", offset, ": offsets are never negative"));
    }
    absl::Status st = Open(offset);
    if (!st.ok()) return st;
    resumed_ = offset > 0;
  }
  if (offset != size_) {
    return absl::InvalidArgumentError(absl::StrCat("chunk at offset ", offset, ", expected ", size_,
                                                   ": chunks must arrive in order"));
  }
  if (data.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("empty chunk at offset ", offset, ": every chunk carries bytes"));
  }
  if (static_cast<int64_t>(data.size()) > kMaxChunkBytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("chunk of ", data.size(), " bytes exceeds the 1 MiB chunk limit"));
  }
  if (size_ + static_cast<int64_t>(data.size()) > total_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("upload exceeds its declared size of ", total_size_, " bytes"));
  }
  return Append(std::move(data));
}

absl::Status UploadStage::Append(std::string chunk) {
  if (fd_ >= 0) {
    absl::Status st = WriteAll(fd_, chunk, part_path_);
    if (!st.ok()) return st;
  } else {
    memory_.append(chunk);
  }
  size_ += static_cast<int64_t>(chunk.size());
  MutexLock lock(&mu_);
  while (queue_.size() >= kMaxQueued) changed_.Wait(&mu_);
  queue_.push_back(std::move(chunk));
  changed_.SignalAll();
  return absl::OkStatus();
}

void UploadStage::DigestLoop() {
  for (;;) {
    std::string chunk;
    {
      MutexLock lock(&mu_);
      while (queue_.empty() && !closed_) changed_.Wait(&mu_);
      if (queue_.empty()) return;
      chunk = std::move(queue_.front());
      queue_.pop_front();
      changed_.SignalAll();
    }
    digest_.Update(chunk);
  }
}

std::string UploadStage::FinishDigest() {
  {
    MutexLock lock(&mu_);
    closed_ = true;
    changed_.SignalAll();
  }
  if (digester_.joinable()) digester_.join();
  return digest_.HexDigest();
}

absl::StatusOr<absl::string_view> UploadStage::Contents() {
  if (fd_ < 0) return absl::string_view(memory_);
  if (size_ == 0) return absl::string_view();
  if (map_ == nullptr) {
    // MAP_POPULATE maps the pages the writes just left in the page cache in one go.
    void* map =
        ::mmap(nullptr, static_cast<size_t>(size_), PROT_READ, MAP_SHARED | MAP_POPULATE, fd_, 0);
    if (map == MAP_FAILED) {
      return absl::InternalError(
          absl::StrCat("cannot map ", part_path_, ": ", std::strerror(errno)));
    }
    map_ = map;
    map_size_ = static_cast<size_t>(size_);
  }
  return absl::string_view(static_cast<const char*>(map_), map_size_);
}

void UploadStage::Discard() {
  if (!part_path_.empty()) ::unlink(part_path_.c_str());
}

}  // namespace fedge::cloud::api
