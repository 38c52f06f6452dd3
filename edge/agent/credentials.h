#ifndef FEDGE_EDGE_AGENT_CREDENTIALS_H_
#define FEDGE_EDGE_AGENT_CREDENTIALS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/net/servers.h"
#include "common/sync/mutex.h"

namespace fedge::edge::agent {

// The node's identity toward the cloud: a private key made on the device and the client
// certificate the coordinator's CA signed for it, in `dir` (node.key, mode 0600; node.crt).
// Ensure() enrolls with the token when there is no usable certificate, and renews over mutual
// TLS once two thirds of the certificate's life have passed. The key never leaves the device
// and is kept across renewals. Thread-safe.
class NodeCredentials {
 public:
  struct Options {
    std::string node_id;
    std::string cloud_address;  // host:port of the Fleet API
    std::string dir;
    std::string ca_file;  // the CA that signed the coordinator's certificate
    std::string enroll_token;
    std::string server_name;  // see net::ChannelTls
    double renew_after = 2.0 / 3.0;
    absl::Duration rpc_timeout = absl::Seconds(30);
  };

  explicit NodeCredentials(Options options) : options_(std::move(options)) {}

  // OK once the node holds a certificate that is valid and not due for renewal, enrolling or
  // renewing first as needed. The error says what to do: e.g. FAILED_PRECONDITION when the
  // node has no certificate and no token, or the cloud's refusal of the token.
  absl::Status Ensure();

  // Mutual TLS with the files in dir (watched, so a renewed certificate is used for new
  // connections).
  net::ChannelTls channel_tls() const;

  const std::string& cert_path() const { return cert_path_; }
  const std::string& key_path() const { return key_path_; }

 private:
  absl::Status EnsureKey();
  absl::Status Enroll();
  absl::Status Renew();

  const Options options_;
  const std::string key_path_ = options_.dir + "/node.key";
  const std::string cert_path_ = options_.dir + "/node.crt";
  Mutex mu_;
};

}  // namespace fedge::edge::agent

#endif  // FEDGE_EDGE_AGENT_CREDENTIALS_H_
