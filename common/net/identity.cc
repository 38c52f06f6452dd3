#include "common/net/identity.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/quote.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/security/auth_context.h"

namespace fedge::net {

bool IsTls(const grpc::AuthContext& auth) {
  std::vector<grpc::string_ref> type =
      auth.FindPropertyValues(GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME);
  // "ssl" from SslServerCredentials, "tls" from the TlsServerCredentials that servers.h uses.
  return !type.empty() && (type[0] == GRPC_SSL_TRANSPORT_SECURITY_TYPE || type[0] == "tls");
}

absl::Status ValidateNodeId(absl::string_view id) {
  auto ok_char = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (!first && (c == '.' || c == '_' || c == '-'));
  };
  bool valid = !id.empty() && id.size() <= 64;
  for (size_t i = 0; valid && i < id.size(); ++i) valid = ok_char(id[i], i == 0);
  if (!valid) {
    return absl::InvalidArgumentError(absl::StrCat(
        "node id ", Quote(id), " is invalid: use 1-64 characters [A-Za-z0-9._-], starting with a "
        "letter or digit"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> CallerNodeId(const grpc::ServerContextBase& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr && IsTls(*auth)) {
    // Over TLS only the verified client certificate names the caller; metadata is ignored.
    std::vector<grpc::string_ref> names = auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME);
    if (!auth->IsPeerAuthenticated() || names.size() != 1) {
      return absl::UnauthenticatedError(
          "this call needs the node's client certificate: enroll the node first (fedge-edge "
          "--enroll_token, see docs/security.md)");
    }
    std::string id(names[0].data(), names[0].size());
    absl::Status st = ValidateNodeId(id);
    if (!st.ok()) {
      return absl::UnauthenticatedError(
          absl::StrCat("the client certificate does not name a node: ", st.message()));
    }
    return id;
  }
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
