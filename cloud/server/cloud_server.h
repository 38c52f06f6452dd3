#ifndef FEDGE_CLOUD_SERVER_CLOUD_SERVER_H_
#define FEDGE_CLOUD_SERVER_CLOUD_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cloud/models/sandbox.h"
#include "common/time/clock.h"

namespace fedge::cloud {

namespace registry {
class Registry;
}

// The whole coordinator in one object: registry, fleet, jobs, the Fleet and Admin gRPC
// servers on their own ports, and the plaintext HTTP port for /metrics and /healthz. The binary
// and the in-process integration tests both use it.
class CloudServer {
 public:
  struct Options {
    std::string data_dir;
    std::string fleet_address = "0.0.0.0:7070";
    std::string admin_address = "0.0.0.0:7071";
    std::string metrics_address = "0.0.0.0:9090";
    std::string rest_address = "0.0.0.0:7072";  // REST/JSON for Admin; empty: off
    std::vector<std::string> webhook_urls;      // http:// endpoints that receive every event
    std::string webhook_secret;                 // HMAC-SHA256 key for X-Fedge-Signature-256
    // Admin bearer tokens and roles (common/auth/tokens.h); empty: the Admin API is open and
    // every caller is an admin (a warning says so at start-up).
    std::string admin_tokens_file;
    absl::Duration deploy_tick = absl::Milliseconds(100);
    absl::Duration heartbeat_interval = absl::Seconds(5);
    absl::Duration liveness_timeout = absl::Seconds(15);
    double max_update_norm = 1e6;
    int64_t max_update_samples = 100'000'000;  // see JobManager::Options
    // Per-node limits on the Fleet port's DownloadModel, UploadUpdate and UploadOffset calls.
    double node_calls_per_second = 10;
    double node_call_burst = 100;
    // An upload stream that sends nothing for this long is cancelled.
    absl::Duration upload_idle_timeout = absl::Seconds(60);
    // Connections the Fleet and Admin ports take (net::ConnectionLimits; 0 max_connections:
    // from the open-file limit), how long a new one has for its TLS and HTTP/2 handshake, and
    // how long one may stay open with no call.
    int max_connections = 0;
    int max_connections_per_address = 512;
    absl::Duration handshake_timeout = absl::Seconds(10);
    absl::Duration idle_connection_timeout = absl::Minutes(2);
    // Concurrent transfers per node and in all (api::StreamSlots).
    int node_transfers = 4;
    int max_transfers = 1024;
    // How RegisterModel tries a user's archive in fedge-model-check before loading it. An
    // empty temp_dir means data_dir.
    models::SandboxLimits model_check;
    // TLS. `insecure`: every listener is plaintext, edges name themselves and nothing is
    // enrolled (local demos only; logged loudly). Otherwise the Fleet, Admin and REST
    // listeners serve tls_cert/tls_key (watched: a rotated pair is picked up within
    // tls_refresh_interval_s), or, when those are empty, a certificate that the node CA issues
    // for tls_names into <data_dir>/tls. The Fleet port verifies edges' client certificates
    // against the node CA: node_ca_cert/node_ca_key, or <data_dir>/ca (made when missing).
    bool insecure = false;
    std::string tls_cert;
    std::string tls_key;
    std::vector<std::string> tls_names = {"localhost", "127.0.0.1", "::1"};
    std::string node_ca_cert;
    std::string node_ca_key;
    absl::Duration node_cert_ttl = absl::Hours(24 * 30);
    int tls_refresh_interval_s = 10;
    Clock* clock = Clock::Real();
  };

  // Opens the registry, resumes unfinished jobs and starts serving.
  static absl::StatusOr<std::unique_ptr<CloudServer>> Start(Options options);
  ~CloudServer();

  int fleet_port() const;
  int admin_port() const;
  int metrics_port() const;
  int rest_port() const;  // 0 when REST is off
  // The node CA's certificate (what edges' certificates chain to); empty when insecure.
  std::string node_ca_file() const;
  // The certificate the listeners serve; empty when insecure.
  std::string tls_cert_file() const;
  registry::Registry* registry();

  // Pauses jobs (they stay resumable), ends every Session with UNAVAILABLE so edges reconnect,
  // and stops the servers. Idempotent.
  void Shutdown();

 private:
  struct Impl;
  static absl::Status SetUpTls(const Options& options, Impl* impl);
  explicit CloudServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedge::cloud

#endif  // FEDGE_CLOUD_SERVER_CLOUD_SERVER_H_
