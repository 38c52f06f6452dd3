#ifndef FEDGE_COMMON_TENSOR_SHA256_H_
#define FEDGE_COMMON_TENSOR_SHA256_H_

#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace fedge {

// Incremental SHA-256 (OpenSSL's EVP). Digests are lowercase hex everywhere in fedge.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(absl::string_view data);
  // Returns the hex digest; the object must not be updated afterwards.
  std::string HexDigest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string Sha256Hex(absl::string_view data);
absl::StatusOr<std::string> Sha256File(const std::string& path);
// True for a 64-character lowercase hex string.
bool IsSha256Hex(absl::string_view s);

}  // namespace fedge

#endif  // FEDGE_COMMON_TENSOR_SHA256_H_
