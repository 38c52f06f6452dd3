#ifndef FEDGE_COMMON_AUTH_TOKEN_STORE_H_
#define FEDGE_COMMON_AUTH_TOKEN_STORE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/auth/tokens.h"
#include "common/sync/mutex.h"
#include "common/time/clock.h"

namespace fedge::auth {

// Who a valid token belongs to.
struct Principal {
  std::string name;
  Role role = Role::kViewer;
};

// The admin tokens of a token file (see tokens.h), re-read when the file changes, so that
// revoking a token is deleting its line. Lookup() checks the file's modification time, size
// and inode at most once per `check_interval`; a re-read that fails keeps the tokens it had
// and logs an error. Thread-safe.
class TokenStore {
 public:
  struct Options {
    std::string path;
    absl::Duration check_interval = absl::Seconds(1);
    Clock* clock = Clock::Real();
  };

  // Reads the file. INVALID_ARGUMENT naming the line if it is malformed, NOT_FOUND if it
  // cannot be read.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Open(Options options);

  // The principal whose token hashes to sha256(secret), compared in constant time; nullopt for
  // an unknown or revoked secret.
  std::optional<Principal> Lookup(absl::string_view secret);

  // Re-reads the file now if it changed. Returns the read's error (the previous tokens stay).
  absl::Status Reload();

  size_t size() const;

 private:
  struct FileStamp {
    bool operator==(const FileStamp& o) const;
    int64_t mtime_ns = 0;
    int64_t size = 0;
    uint64_t inode = 0;
    uint64_t device = 0;
  };
  explicit TokenStore(Options options) : options_(std::move(options)) {}
  // Reads and parses the file with its stamp.
  absl::StatusOr<std::vector<TokenEntry>> Read(FileStamp* stamp) const;
  void MaybeReload();

  const Options options_;
  mutable Mutex mu_;
  std::vector<TokenEntry> tokens_ ABSL_GUARDED_BY(mu_);
  FileStamp stamp_ ABSL_GUARDED_BY(mu_);
  absl::Time last_check_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::auth

#endif  // FEDGE_COMMON_AUTH_TOKEN_STORE_H_
