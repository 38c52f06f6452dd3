#ifndef FEDGE_COMMON_TLS_X509_H_
#define FEDGE_COMMON_TLS_X509_H_

// X.509 keys, certificate requests and certificates over OpenSSL 3, for the coordinator's
// certificate authority: an edge enrolls by sending a CSR, and the coordinator signs a
// short-lived client certificate whose common name is the node id.
//
// Keys, CSRs and certificates are PEM text. Private keys must be unencrypted. Errors are
// INVALID_ARGUMENT for malformed or unacceptable input, naming what is wrong, and INTERNAL when
// OpenSSL fails; both carry OpenSSL's reason when it gave one. Every function is stateless and
// may be called from many threads at once.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fedge::tls {

// How far not_before is set back from the issue time, for gateways whose clocks run behind.
inline constexpr absl::Duration kClockSkew = absl::Minutes(5);

// A new EC P-256 private key, PKCS#8 PEM ("BEGIN PRIVATE KEY").
absl::StatusOr<std::string> GenerateKeyPem();

// A CSR signed by key_pem with subject CN=common_name (SHA-256). The common name must be 1-64
// bytes.
absl::StatusOr<std::string> MakeCsr(absl::string_view key_pem, absl::string_view common_name);

struct CsrInfo {
  std::string common_name;     // the subject's first CN; empty if it has none
  std::string public_key_pem;  // SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY")
};

// Parses a CSR and verifies its self-signature: INVALID_ARGUMENT if it is not a PEM CSR, or the
// signature does not verify, or the key is not EC P-256 / RSA >= 2048.
absl::StatusOr<CsrInfo> ParseCsr(absl::string_view csr_pem);

struct CertificateInfo {
  std::string common_name;                // the subject's first CN; empty if it has none
  std::vector<std::string> dns_names;     // subjectAltName DNS entries
  std::vector<std::string> ip_addresses;  // subjectAltName IP entries, text form ("::1")
  absl::Time not_before, not_after;
  std::string serial_hex;          // lowercase, as `openssl x509 -serial` prints it
  bool is_ca = false;              // basicConstraints CA:TRUE
  std::string sha256_fingerprint;  // lowercase hex of sha256(DER)
};

// The first certificate in pem. INVALID_ARGUMENT if there is none.
absl::StatusOr<CertificateInfo> ParseCertificate(absl::string_view pem);

// A self-signed CA certificate for key_pem: CA:TRUE (critical), keyCertSign|cRLSign, SKI, valid
// from now - kClockSkew for `validity` (so not_after = now - kClockSkew + validity, which must be
// after now).
absl::StatusOr<std::string> MakeSelfSignedCa(absl::string_view key_pem,
                                             absl::string_view common_name, absl::Time now,
                                             absl::Duration validity);

struct Issuer {
  std::string cert_pem;  // a CA certificate (CA:TRUE)
  std::string key_pem;   // its private key
};

struct IssueOptions {
  std::string common_name;  // the subject is exactly CN=<common_name>; the CSR's subject is ignored
  std::vector<std::string> dns_names;     // "edge-1.local", "*.fleet.example"
  std::vector<std::string> ip_addresses;  // "127.0.0.1", "::1"
  absl::Time now;                         // not_before = now - kClockSkew (clock skew on gateways)
  absl::Duration validity;   // not_after = not_before + validity, capped as SignCsr says
  bool client_auth = false;  // extendedKeyUsage clientAuth
  bool server_auth = false;  // extendedKeyUsage serverAuth
};

// Signs the CSR's public key (after ParseCsr's checks) with the issuer: CA:FALSE,
// digitalSignature (+ keyEncipherment for RSA), the EKUs asked, SKI/AKI, SAN from options, random
// 127-bit positive serial, SHA-256. not_after is capped at the issuer's not_after.
// INVALID_ARGUMENT if the issuer's key does not match its certificate, the issuer is not a CA,
// a name or address in options is malformed, or the certificate would not be valid at `now`.
absl::StatusOr<std::string> SignCsr(const Issuer& issuer, absl::string_view csr_pem,
                                    const IssueOptions& options);

// The same for a key held locally (builds the CSR internally).
absl::StatusOr<std::string> IssueCertificate(const Issuer& issuer, absl::string_view key_pem,
                                             const IssueOptions& options);

// OK if the private key is the one of the certificate's public key, else INVALID_ARGUMENT.
absl::Status KeyMatchesCertificate(absl::string_view key_pem, absl::string_view cert_pem);

// Verifies cert_pem against the CA certificates in ca_pem (one or more PEM blocks) at time `at`
// (X509_VERIFY_PARAM_set_time). The chain must end at a self-signed certificate in ca_pem.
// UNAUTHENTICATED naming OpenSSL's reason (e.g. "certificate has expired") if it does not
// verify; INVALID_ARGUMENT if either input holds no certificate.
absl::Status VerifyCertificate(absl::string_view cert_pem, absl::string_view ca_pem, absl::Time at);

}  // namespace fedge::tls

#endif  // FEDGE_COMMON_TLS_X509_H_
