#ifndef FEDGE_CLOUD_ENROLL_ENROLLMENT_H_
#define FEDGE_CLOUD_ENROLL_ENROLLMENT_H_

// Who may be in the fleet: enrollment tokens, the node certificate authority, and each node's
// access state.
//
// An operator creates a token (single- or N-use, with a TTL and labels). An edge enrolls with
// it and a CSR made on the device; the coordinator's CA signs a client certificate whose common
// name is the node id, and the token's labels are bound to the node. Certificates are renewed
// by the node itself before they expire. A node can be disabled (refused until enabled again)
// or revoked (refused for good; its id never enrolls again). Everything is kept in
// <data_dir>/enroll.db; token secrets are stored only as their sha256.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/time/clock.h"
#include "fedge/v1/admin.pb.h"
#include "fedge/v1/fleet.pb.h"

namespace fedge::cloud::enroll {

// The coordinator's CA for node certificates. `Load` reads <dir>/ca.crt and <dir>/ca.key, or
// makes them (the key mode 0600) when neither exists.
struct CaFiles {
  std::string cert_path;
  std::string key_path;
};
absl::StatusOr<CaFiles> LoadOrCreateCa(const std::string& dir, Clock* clock);

// A server certificate for the coordinator's listeners, issued by the CA in `ca` for `names`
// (DNS names and IP addresses) into <dir>/server.crt and <dir>/server.key. An existing pair
// is kept while it is valid for more than a third of its life and covers the same names.
struct ServerCertFiles {
  std::string cert_path;
  std::string key_path;
};
absl::StatusOr<ServerCertFiles> EnsureServerCertificate(const CaFiles& ca, const std::string& dir,
                                                        const std::vector<std::string>& names,
                                                        Clock* clock);

class Enrollment {
 public:
  struct Options {
    std::string data_dir;  // holds enroll.db
    CaFiles ca;            // signs node certificates
    absl::Duration certificate_ttl = absl::Hours(24 * 30);
    Clock* clock = Clock::Real();
    // Called after a node is disabled or revoked, to end its open session.
    std::function<void(const std::string& node_id, const absl::Status& why)> on_refused;
  };

  static absl::StatusOr<std::unique_ptr<Enrollment>> Open(Options options);
  ~Enrollment();

  // Admin side. `uses` 0 means 1, `ttl` zero means one day. Labels follow the label rules
  // (keys [A-Za-z0-9._/-]{1,63}, values up to 256 characters, no control characters). The
  // answer's secret is the only copy.
  absl::StatusOr<v1::EnrollmentToken> CreateToken(const v1::CreateEnrollmentTokenRequest& request,
                                                  const std::string& creator);
  absl::StatusOr<std::vector<v1::EnrollmentToken>> ListTokens();
  absl::StatusOr<v1::EnrollmentToken> RevokeToken(const std::string& id);

  // Fleet side. The token is checked (UNAUTHENTICATED: unknown, revoked or expired;
  // PERMISSION_DENIED: every use spent), then the node id (INVALID_ARGUMENT if malformed,
  // ALREADY_EXISTS if enrolled, PERMISSION_DENIED if revoked) and the CSR (INVALID_ARGUMENT).
  // A use is spent only when a certificate is issued.
  absl::StatusOr<v1::EnrollResponse> Enroll(const v1::EnrollRequest& request);
  // A new certificate for an enrolled, enabled node.
  absl::StatusOr<v1::EnrollResponse> Renew(const std::string& node_id, absl::string_view csr_pem);

  // OK if the node may call: enabled, or unknown here (a certificate from an operator's own
  // CA). PERMISSION_DENIED if disabled or revoked, saying by whom and why.
  absl::Status CheckNode(const std::string& node_id) const;
  // The labels bound to the node at enrollment (empty if none).
  std::map<std::string, std::string> BoundLabels(const std::string& node_id) const;

  // ENABLED or DISABLED. NOT_FOUND for a node never enrolled or seen; FAILED_PRECONDITION for
  // a revoked node.
  absl::StatusOr<v1::NodeAccess> SetAccess(const std::string& node_id, v1::NodeAccessState state,
                                           const std::string& principal,
                                           const std::string& reason);
  // Revokes for good; a node id never enrolled is recorded as revoked too, so that no one can
  // enroll it later.
  absl::StatusOr<v1::NodeAccess> Revoke(const std::string& node_id, const std::string& principal,
                                        const std::string& reason);
  absl::StatusOr<std::vector<v1::NodeAccess>> ListNodes();

  // The CA certificate (PEM) that signs node certificates.
  const std::string& ca_pem() const;

 private:
  struct Impl;
  explicit Enrollment(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// INVALID_ARGUMENT naming the label and the rule it breaks.
absl::Status ValidateLabel(absl::string_view key, absl::string_view value);

}  // namespace fedge::cloud::enroll

#endif  // FEDGE_CLOUD_ENROLL_ENROLLMENT_H_
