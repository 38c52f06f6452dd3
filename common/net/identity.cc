#include "common/net/identity.h"

#include "absl/strings/str_cat.h"

namespace fedge::net {

absl::Status ValidateNodeId(absl::string_view id) {
  auto ok_char = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (!first && (c == '.' || c == '_' || c == '-'));
  };
  bool valid = !id.empty() && id.size() <= 64;
  for (size_t i = 0; valid && i < id.size(); ++i) valid = ok_char(id[i], i == 0);
  if (!valid) {
    return absl::InvalidArgumentError(absl::StrCat(
        "node id '", id, "' is invalid: use 1-64 characters [A-Za-z0-9._-], starting with a "
        "letter or digit"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> CallerNodeId(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kNodeIdMetadata);
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        absl::StrCat("call carries no node identity (metadata '", kNodeIdMetadata, "')"));
  }
  std::string id(it->second.data(), it->second.size());
  absl::Status st = ValidateNodeId(id);
  if (!st.ok()) return st;
  return id;
}

std::string CallerPrincipal(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kPrincipalMetadata);
  if (it == metadata.end() || it->second.empty() || it->second.size() > 128) return "anonymous";
  return std::string(it->second.data(), it->second.size());
}

void SetCallerNodeId(grpc::ClientContext* context, const std::string& node_id) {
  context->AddMetadata(kNodeIdMetadata, node_id);
}

}  // namespace fedge::net
