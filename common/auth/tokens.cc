#include "common/auth/tokens.h"

#include <openssl/rand.h>
#include <openssl/sha.h>

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/net/identity.h"

namespace fedge::auth {
namespace {

constexpr char kHashPrefix[] = "sha256:";

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string RawSha256(absl::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kViewer:
      return "viewer";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

absl::StatusOr<Role> ParseRole(absl::string_view name) {
  if (name == "viewer") return Role::kViewer;
  if (name == "operator") return Role::kOperator;
  if (name == "admin") return Role::kAdmin;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown role '", name, "': use viewer, operator or admin"));
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(absl::string_view text,
                                                       absl::string_view source) {
  std::vector<TokenEntry> entries;
  std::set<std::string> names;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    auto fail = [&](absl::string_view problem) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line_number, ": ", problem,
                       "; each line must read `<name> <role> sha256:<64 hex>`, as printed by "
                       "`fedgectl tokens create --name=NAME --role=ROLE`"));
    };
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 3) {
      return fail(absl::StrCat("expected 3 fields, found ", fields.size()));
    }
    TokenEntry entry;
    entry.name = std::string(fields[0]);
    if (absl::Status st = net::ValidateNodeId(entry.name); !st.ok()) {
      return fail(absl::StrCat("token name '", entry.name,
                               "' is invalid (1-64 characters [A-Za-z0-9._-], starting with a "
                               "letter or digit)"));
    }
    if (!names.insert(entry.name).second) {
      return fail(absl::StrCat("token name '", entry.name,
                               "' appears twice (give each token its own name)"));
    }
    auto role = ParseRole(fields[1]);
    if (!role.ok()) return fail(role.status().message());
    entry.role = *role;
    absl::string_view hash = fields[2];
    if (!absl::ConsumePrefix(&hash, kHashPrefix) || hash.size() != 64 || !IsLowerHex(hash)) {
      return fail(absl::StrCat("the third field '", fields[2],
                               "' is not sha256: followed by 64 lowercase hex digits (store the "
                               "hash of the secret, never the secret)"));
    }
    entry.sha256 = absl::HexStringToBytes(hash);
    entries.push_back(std::move(entry));
  }
  return entries;
}

std::string HashField(absl::string_view secret) {
  return absl::StrCat(kHashPrefix, absl::BytesToHexString(RawSha256(secret)));
}

absl::StatusOr<std::string> GenerateSecret() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return absl::InternalError("the system's random source (OpenSSL RAND_bytes) failed");
  }
  std::string encoded;
  absl::WebSafeBase64Escape(absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)),
                            &encoded);
  return absl::StrCat("fedge_", encoded);
}

std::string TokenLine(absl::string_view name, Role role, absl::string_view secret) {
  return absl::StrCat(name, " ", RoleName(role), " ", HashField(secret));
}

absl::StatusOr<std::string> ParseBearer(absl::string_view authorization) {
  absl::string_view value = absl::StripAsciiWhitespace(authorization);
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError(
        "the authorization metadata is not `Bearer <token>`; send `authorization: Bearer "
        "<token>`");
  }
  value.remove_prefix(kScheme.size());
  value = absl::StripLeadingAsciiWhitespace(value);
  if (value.empty()) {
    return absl::UnauthenticatedError(
        "the bearer token is empty; send `authorization: Bearer <token>`");
  }
  return std::string(value);
}

}  // namespace fedge::auth
