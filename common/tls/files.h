#ifndef FEDGE_COMMON_TLS_FILES_H_
#define FEDGE_COMMON_TLS_FILES_H_

// Reading and writing the PEM files that hold keys and certificates.

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedge::tls {

// The whole file. NOT_FOUND, PERMISSION_DENIED or INTERNAL naming the path and the OS error.
absl::StatusOr<std::string> ReadPemFile(const std::string& path);

// Replaces path with content, created with `mode` (0600 for a private key): a temporary file
// beside it, fsync, rename. A reader sees the old file or the new one, never a part, and a
// crash leaves one of the two. Errors name the path and the OS error (RESOURCE_EXHAUSTED for a
// full disk).
absl::Status WritePemFile(const std::string& path, const std::string& content, mode_t mode);

}  // namespace fedge::tls

#endif  // FEDGE_COMMON_TLS_FILES_H_
