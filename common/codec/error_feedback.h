#ifndef FEDGE_COMMON_CODEC_ERROR_FEEDBACK_H_
#define FEDGE_COMMON_CODEC_ERROR_FEEDBACK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/codec/codec.h"
#include "common/sync/mutex.h"

namespace fedge::codec {

// Edge-side error feedback for lossy update encodings. What an encoding drops from one update
// (top-k's small entries, quantisation error) is kept as a residual per key and added to
// the next update under that key, so over many rounds nothing is lost: the decoded updates plus the residual
// sum to the sum of the deltas.
//
// A key names one stream of updates (the edge uses the job id: a new job starts from another
// base). Residuals are persisted, one file per key (`<key>.residual` in Options::dir, written to a temporary name, fsynced and renamed),
// so they survive a restart. Compress assumes the payload it returns is delivered; a caller
// that abandons one loses that update's decoded part, as it would without error feedback.
//
// Thread-safe; calls are serialised.
class ErrorFeedback {
 public:
  struct Options {
    // Directory for the residual files; created if missing. Files that are corrupt are
    // discarded with a warning.
    std::string dir;
  };

  static absl::StatusOr<std::unique_ptr<ErrorFeedback>> Open(Options options);

  // Encodes delta + residual and sets residual = (delta + residual) − decode(payload). A held
  // residual of another length than `delta` (the model's schema changed under the same key,
  // or a stale file) is discarded with a warning. INVALID_ARGUMENT if the sum holds a NaN or
  // infinity or the encoder refuses it; an I/O error if the residual cannot be persisted. On
  // error the residual is unchanged.
  absl::StatusOr<std::string> Compress(absl::string_view key, absl::Span<const float> delta,
                                       const CodecParams& params, uint64_t seed);

  // A copy of the key's residual; empty if none is held.
  std::vector<float> Residual(absl::string_view key) const;

  // Forgets the key's residual, in memory and on disk.
  absl::Status Clear(absl::string_view key);

  // Forgets every residual but `key`'s (a new job makes the others stale).
  absl::Status KeepOnly(absl::string_view key);

 private:
  explicit ErrorFeedback(std::string dir) : dir_(std::move(dir)) {}
  absl::Status LoadAll();
  std::string PathFor(absl::string_view key) const;

  const std::string dir_;
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, std::vector<float>> residuals_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::codec

#endif  // FEDGE_COMMON_CODEC_ERROR_FEEDBACK_H_
