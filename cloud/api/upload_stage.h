#ifndef FEDGE_CLOUD_API_UPLOAD_STAGE_H_
#define FEDGE_CLOUD_API_UPLOAD_STAGE_H_

#include <cstdint>
#include <deque>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sync/mutex.h"
#include "common/tensor/sha256.h"

namespace fedge::cloud::api {

// The largest chunk of an upload (design.md: everything large is chunked, at most 1 MiB).
inline constexpr int64_t kMaxChunkBytes = 1 << 20;

// Where an upload's bytes wait, in order, until the whole payload can be checked and folded.
//
// With a part path the chunks are appended to that file (so a broken stream can resume from it)
// and the payload is read back through a read-only mapping of the file; without one they are
// kept in memory. Either way each chunk is digested on a second thread while the caller goes on
// receiving, so the sha256 overlaps the transport instead of following it.
//
// Not thread-safe: one caller drives it. The part file is left in place unless Discard() is
// called, which is what lets an interrupted upload resume.
class UploadStage {
 public:
  // total_size bounds what Append accepts.
  UploadStage(std::string part_path, int64_t total_size);
  ~UploadStage();
  UploadStage(const UploadStage&) = delete;
  UploadStage& operator=(const UploadStage&) = delete;

  // Starts staging at `offset`: 0 starts afresh; more continues the part an earlier attempt
  // left, which must hold exactly `offset` bytes (INVALID_ARGUMENT otherwise, naming both), and
  // must be readable (DATA_LOSS, and the part is dropped). A negative total_size is
  // INVALID_ARGUMENT.
  absl::Status Open(int64_t offset);
  // Takes the next chunk of an upload stream, checked as the wire protocol demands: the first
  // chunk opens the stage at its offset (a resume when > 0, see Open); each later one must
  // start where the previous ended (INVALID_ARGUMENT); a chunk is 1 to kMaxChunkBytes bytes
  // (empty: INVALID_ARGUMENT, larger: RESOURCE_EXHAUSTED), so a stream has at most total_size
  // chunks; and the upload may not outgrow total_size (INVALID_ARGUMENT).
  absl::Status AddChunk(int64_t offset, std::string data);
  // True once the first chunk resumed an earlier attempt's part.
  bool resumed() const { return resumed_; }
  // Appends bytes without the checks of AddChunk. RESOURCE_EXHAUSTED when the disk is full,
  // INTERNAL on other write errors.
  absl::Status Append(std::string chunk);
  // Bytes staged so far, including a resumed part.
  int64_t size() const { return size_; }
  // Waits for the digest of everything appended and returns it as lowercase hex. Call once,
  // after the last Append.
  std::string FinishDigest();
  // The whole staged payload, valid while this object lives. Call after FinishDigest.
  absl::StatusOr<absl::string_view> Contents();
  // Removes the part file.
  void Discard();

 private:
  void DigestLoop();

  const std::string part_path_;
  const int64_t total_size_;
  int fd_ = -1;
  std::string memory_;  // the payload when there is no part file
  int64_t size_ = 0;
  bool opened_ = false;
  bool resumed_ = false;
  void* map_ = nullptr;
  size_t map_size_ = 0;

  Sha256 digest_;  // touched only by the digest thread until it is joined
  Mutex mu_;
  CondVar changed_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::thread digester_;
};

}  // namespace fedge::cloud::api

#endif  // FEDGE_CLOUD_API_UPLOAD_STAGE_H_
