#ifndef FEDGE_CLOUD_API_ADMIN_AUTH_H_
#define FEDGE_CLOUD_API_ADMIN_AUTH_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/auth/token_store.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/server_context.h"

namespace fedge::cloud::api {

// The metadata entry that carries `Bearer <token>` on an Admin call.
inline constexpr char kAuthorizationMetadata[] = "authorization";

// The least role allowed to call each fedge.v1.Admin method, by method name. This is the one
// place that says who may do what: reads are viewer, running the lifecycle (jobs,
// deployments, registering and evaluating versions) is operator, and changing what the fleet
// serves or keeps (promotion, aliases, gate and retrain policies, retention) is admin.
const std::map<std::string, auth::Role>& AdminMethodRoles();

// OK if AdminMethodRoles() names exactly the methods of `service`; otherwise INTERNAL naming
// the methods without a role (or the roles of methods that no longer exist).
absl::Status CheckAdminMethodRoles(const google::protobuf::ServiceDescriptor& service);

// Decides who is calling an Admin method and whether they may. Thread-safe.
class AdminAuthorizer {
 public:
  // `tokens` null: authentication is off, every caller is an admin and the principal is the
  // `x-fedge-principal` metadata (or "anonymous"). Otherwise every call needs a bearer token
  // from `tokens`, and its name is the principal.
  explicit AdminAuthorizer(auth::TokenStore* tokens) : tokens_(tokens) {}

  // The principal of a call to `method` (a name in AdminMethodRoles()). UNAUTHENTICATED for a
  // missing, malformed, unknown or revoked token; PERMISSION_DENIED naming the method, the
  // role it needs and the caller's role.
  absl::StatusOr<std::string> Authorize(const grpc::ServerContextBase& context,
                                        absl::string_view method) const;

  bool enabled() const { return tokens_ != nullptr; }

 private:
  auth::TokenStore* const tokens_;
};

}  // namespace fedge::cloud::api

#endif  // FEDGE_CLOUD_API_ADMIN_AUTH_H_
