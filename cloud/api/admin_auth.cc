#include "cloud/api/admin_auth.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/net/identity.h"

namespace fedge::cloud::api {

using auth::Role;

const std::map<std::string, Role>& AdminMethodRoles() {
  static const auto* const kRoles = new std::map<std::string, Role>{
      // Reads.
      {"ListModels", Role::kViewer},
      {"ListVersions", Role::kViewer},
      {"GetVersion", Role::kViewer},
      {"DownloadVersion", Role::kViewer},
      {"GetJob", Role::kViewer},
      {"ListJobs", Role::kViewer},
      {"ListNodes", Role::kViewer},
      {"GetModel", Role::kViewer},
      {"GetLineage", Role::kViewer},
      {"ListAudit", Role::kViewer},
      {"WatchEvents", Role::kViewer},
      {"ListEvents", Role::kViewer},
      {"ListWebhookDeliveries", Role::kViewer},
      {"ListDeployments", Role::kViewer},
      {"GetDeployment", Role::kViewer},
      {"GetRetrainPolicy", Role::kViewer},
      {"ListEnrollmentTokens", Role::kViewer},
      {"ListNodeAccess", Role::kViewer},
      // Running the lifecycle.
      {"RegisterModel", Role::kOperator},
      {"StartJob", Role::kOperator},
      {"CancelJob", Role::kOperator},
      {"Deploy", Role::kOperator},
      {"SetTags", Role::kOperator},
      {"ValidateVersion", Role::kOperator},
      {"CreateDeployment", Role::kOperator},
      {"PauseDeployment", Role::kOperator},
      {"ResumeDeployment", Role::kOperator},
      {"RollbackDeployment", Role::kOperator},
      {"TriggerRetrain", Role::kOperator},
      {"SetNodeAccess", Role::kOperator},
      // Changing what the fleet serves, what is kept, and the policies.
      {"UpdateModel", Role::kAdmin},
      {"SetAlias", Role::kAdmin},
      {"DeleteAlias", Role::kAdmin},
      {"Promote", Role::kAdmin},
      {"ApplyRetention", Role::kAdmin},
      {"SetRetrainPolicy", Role::kAdmin},
      {"CreateEnrollmentToken", Role::kAdmin},
      {"RevokeEnrollmentToken", Role::kAdmin},
      {"RevokeNode", Role::kAdmin},
  };
  return *kRoles;
}

absl::Status CheckAdminMethodRoles(const google::protobuf::ServiceDescriptor& service) {
  const auto& roles = AdminMethodRoles();
  std::vector<std::string> missing;
  std::vector<std::string> stale;
  for (int i = 0; i < service.method_count(); ++i) {
    if (roles.count(service.method(i)->name()) == 0) missing.push_back(service.method(i)->name());
  }
  for (const auto& [name, role] : roles) {
    if (service.FindMethodByName(name) == nullptr) stale.push_back(name);
  }
  if (missing.empty() && stale.empty()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(
      service.full_name(), " methods without a role: [", absl::StrJoin(missing, ", "),
      "], roles of methods it does not have: [", absl::StrJoin(stale, ", "),
      "]; give every method its least role in AdminMethodRoles() (cloud/api/admin_auth.cc)"));
}

absl::StatusOr<std::string> AdminAuthorizer::Authorize(const grpc::ServerContextBase& context,
                                                       absl::string_view method) const {
  if (tokens_ == nullptr) return net::CallerPrincipal(context);
  const auto& roles = AdminMethodRoles();
  auto need = roles.find(std::string(method));
  if (need == roles.end()) {
    return absl::InternalError(absl::StrCat("Admin method ", method, " has no role"));
  }
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kAuthorizationMetadata);
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        "this Admin API requires a token: send `authorization: Bearer <token>` (fedgectl "
        "--token or FEDGE_TOKEN); create one with `fedgectl tokens create`");
  }
  auto secret = auth::ParseBearer(absl::string_view(it->second.data(), it->second.size()));
  if (!secret.ok()) return secret.status();
  auto principal = tokens_->Lookup(*secret);
  if (!principal) {
    return absl::UnauthenticatedError(
        "the bearer token is unknown or revoked; create one with `fedgectl tokens create` and "
        "add its line to the admin tokens file");
  }
  if (!auth::RoleAllows(principal->role, need->second)) {
    return absl::PermissionDeniedError(
        absl::StrCat("Admin.", method, " needs role ", auth::RoleName(need->second), "; token '",
                     principal->name, "' has role ", auth::RoleName(principal->role)));
  }
  return principal->name;
}

}  // namespace fedge::cloud::api
