#ifndef FEDGE_COMMON_AUTH_TOKENS_H_
#define FEDGE_COMMON_AUTH_TOKENS_H_

// Admin bearer tokens: roles, the token file format, and secrets.
//
// A token file holds one token a line, `<name> <role> sha256:<64 lowercase hex>`, where the
// hash is the sha256 of the secret a client sends as `authorization: Bearer <secret>`. Blank
// lines and lines starting with `#` are ignored. The file never holds a usable secret.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedge::auth {

// Each role may do everything the roles below it may.
enum class Role { kViewer = 1, kOperator = 2, kAdmin = 3 };

// "viewer", "operator", "admin".
const char* RoleName(Role role);
// INVALID_ARGUMENT naming the three roles unless `name` is one of them.
absl::StatusOr<Role> ParseRole(absl::string_view name);
// True if a caller with `have` may call a method that needs `need`.
inline bool RoleAllows(Role have, Role need) {
  return static_cast<int>(have) >= static_cast<int>(need);
}

struct TokenEntry {
  std::string name;  // the principal recorded in the audit log
  Role role = Role::kViewer;
  std::string sha256;  // 32 raw bytes: the sha256 of the secret
};

// Parses a token file's text. `source` names the file in errors, which read
// "<source>:<line>: <problem>; <fix>". Names follow the node id rules and appear once.
absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(absl::string_view text,
                                                       absl::string_view source);

// "sha256:<hex>" of a secret: the third field of its token line.
std::string HashField(absl::string_view secret);

// A new secret: "fedge_" + 32 bytes from OpenSSL's CSPRNG, base64url without padding.
// INTERNAL if the random source fails.
absl::StatusOr<std::string> GenerateSecret();

// The token file line for a secret: "<name> <role> sha256:<hex>".
std::string TokenLine(absl::string_view name, Role role, absl::string_view secret);

// The secret of an `authorization` value "Bearer <secret>" (the scheme in any case).
// UNAUTHENTICATED, saying how to send one, if the value is not of that form.
absl::StatusOr<std::string> ParseBearer(absl::string_view authorization);

}  // namespace fedge::auth

#endif  // FEDGE_COMMON_AUTH_TOKENS_H_
