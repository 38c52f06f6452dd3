#ifndef FEDGE_COMMON_NET_IDENTITY_H_
#define FEDGE_COMMON_NET_IDENTITY_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/client_context.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/server_context.h"

namespace fedge::net {

// The metadata entry that carries an edge's node id on a plaintext (--insecure) connection.
inline constexpr char kNodeIdMetadata[] = "x-fedge-node-id";

// INVALID_ARGUMENT unless id matches [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
absl::Status ValidateNodeId(absl::string_view id);

// The identity of the node making this call. This is the one seam where credentials become a
// node id. Over TLS it is the common name of the verified client certificate, and the
// metadata entry is ignored (UNAUTHENTICATED without a certificate). Over plaintext, which
// only a coordinator started with --insecure serves, it is the kNodeIdMetadata entry
// (UNAUTHENTICATED without one; INVALID_ARGUMENT if malformed).
absl::StatusOr<std::string> CallerNodeId(const grpc::ServerContextBase& context);

// True if the call's connection is TLS.
bool IsTls(const grpc::AuthContext& auth);

// The operator behind an Admin call when Admin authentication is off: the CLI's user name from
// the `x-fedge-principal` metadata entry ("anonymous" without one). With
// --admin_tokens_file, cloud/api/admin_auth.h names the caller by its bearer token instead and
// this entry is ignored, since any client can set it.
inline constexpr char kPrincipalMetadata[] = "x-fedge-principal";
std::string CallerPrincipal(const grpc::ServerContextBase& context);

// Attaches a node's identity to an outgoing call.
void SetCallerNodeId(grpc::ClientContext* context, const std::string& node_id);

}  // namespace fedge::net

#endif  // FEDGE_COMMON_NET_IDENTITY_H_
