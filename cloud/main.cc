// fedge-cloud: the coordinator. Serves the edge-facing Fleet API, the operators' Admin API, and
// /metrics and /healthz on a plaintext port.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "cloud/server/cloud_server.h"
#include "common/app/app.h"
#include "common/net/connection_gate.h"
#include "glog/logging.h"

ABSL_FLAG(std::string, data_dir, "",
          "Directory for the registry (registry.db) and model blobs. Required. On Kubernetes, a "
          "persistent volume.");
ABSL_FLAG(std::string, fleet_address, "0.0.0.0:7070",
          "host:port of the edge-facing Fleet gRPC API. Port 0 picks a free port.");
ABSL_FLAG(std::string, admin_address, "0.0.0.0:7071",
          "host:port of the operators' Admin gRPC API (used by fedgectl).");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9090",
          "host:port of the plaintext HTTP listener for /metrics and /healthz.");
ABSL_FLAG(std::string, rest_address, "0.0.0.0:7072",
          "host:port of the REST/JSON gateway to the Admin API (POST /v1/admin/{Method}). "
          "Empty: off.");
ABSL_FLAG(std::vector<std::string>, webhook_urls, {},
          "Comma-separated http:// URLs that receive every lifecycle event as a signed JSON POST.");
ABSL_FLAG(std::string, webhook_secret_file, "",
          "File holding the HMAC-SHA256 key that signs webhook bodies (X-Fedge-Signature-256).");
ABSL_FLAG(std::string, admin_tokens_file, "",
          "File of Admin API bearer tokens, one `<name> <role> sha256:<hex>` a line (made by "
          "`fedgectl tokens create`); roles are viewer, operator and admin. Re-read when it "
          "changes. Empty: the Admin API is open to every caller (a warning says so).");
ABSL_FLAG(std::string, ports_file, "",
          "If set, write the bound ports here (lines fleet=N, admin=N, metrics=N) once serving; "
          "for scripts that start the cloud on port 0.");
ABSL_FLAG(int, heartbeat_interval_ms, 5000, "How often edges are asked to send heartbeats.");
ABSL_FLAG(int, liveness_timeout_ms, 15000,
          "A node whose last heartbeat is older than this is not selected for rounds.");
ABSL_FLAG(double, node_calls_per_second, 10,
          "Per-node rate of DownloadModel, UploadUpdate and UploadOffset calls; beyond it a call "
          "is refused RESOURCE_EXHAUSTED.");
ABSL_FLAG(double, node_call_burst, 100, "Calls a quiet node may make at once.");
ABSL_FLAG(int, upload_idle_timeout_s, 60,
          "An upload stream that sends nothing for this many seconds is cancelled.");
ABSL_FLAG(int, shutdown_grace_s, 25,
          "After SIGTERM or SIGINT, the process exits within this many seconds even if the "
          "orderly shutdown has not finished (keep it below Kubernetes' grace period).");
ABSL_FLAG(int, max_connections, 0,
          "Connections the Fleet port (and, apart, the Admin port) takes at once; past it new "
          "ones are closed. 0: the open-file limit less a reserve.");
ABSL_FLAG(int, max_connections_per_address, 512,
          "Connections from one address on the Fleet and Admin ports; past it that address's "
          "oldest is closed. 0: no limit. Raise it for sites with many gateways behind one "
          "NAT address.");
ABSL_FLAG(int, handshake_timeout_s, 10,
          "Seconds a new connection has to finish its TLS and HTTP/2 handshake.");
ABSL_FLAG(int, idle_connection_timeout_s, 120,
          "A Fleet connection with no call open for this many seconds is closed (edges hold "
          "their Session open, so they are never idle).");
ABSL_FLAG(int, node_transfers, 4,
          "Concurrent DownloadModel and UploadUpdate streams one node may hold; more are "
          "refused RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_transfers, 1024,
          "Concurrent DownloadModel and UploadUpdate streams the coordinator serves at once.");
ABSL_FLAG(double, max_update_norm, 1e6,
          "Updates whose L2 norm exceeds this are refused as diverged or malicious.");
ABSL_FLAG(int64_t, max_update_samples, 100000000,
          "Updates claiming more samples than this are refused; below it an update weighs at "
          "most the local samples its node reported.");
ABSL_FLAG(std::string, model_check_path, "",
          "The fedge-model-check helper that tries each user-supplied model archive before it "
          "is loaded; empty: the one beside this binary, then PATH.");
ABSL_FLAG(int64_t, model_check_memory_mb, 2048,
          "Address-space limit of fedge-model-check (RLIMIT_AS), in MiB.");
ABSL_FLAG(int64_t, model_check_cpu_s, 60,
          "CPU-time limit of fedge-model-check (RLIMIT_CPU), in seconds.");
ABSL_FLAG(int64_t, model_check_max_entries, 10000,
          "A user's model archive holding more zip entries is refused before it is tried.");
ABSL_FLAG(int64_t, model_check_max_unpacked_mb, 4096,
          "A user's model archive unpacking to more than this (or to more than 4 times its size "
          "plus 64 MiB) is refused before it is tried.");
ABSL_FLAG(int, model_check_timeout_s, 120,
          "Wall-clock limit of one fedge-model-check run; then it is killed and the archive "
          "refused.");

ABSL_FLAG(bool, insecure, false,
          "Serve the Fleet, Admin and REST ports in PLAINTEXT, with no enrollment: edges name "
          "themselves. For local demos only; logged loudly.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate (chain) the Fleet, Admin and REST ports serve; re-read when it "
          "changes. Empty: one the node CA issues for --tls_names into <data_dir>/tls.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::vector<std::string>, tls_names, std::vector<std::string>({"localhost", "127.0.0.1", "::1"}),
          "Host names and IP addresses edges and operators dial, for the certificate made "
          "when --tls_cert is empty.");
ABSL_FLAG(std::string, node_ca_cert, "",
          "PEM certificate of the CA that signs node certificates and verifies edges. Empty: "
          "<data_dir>/ca/ca.crt, made on first start.");
ABSL_FLAG(std::string, node_ca_key, "", "PEM private key of --node_ca_cert.");
ABSL_FLAG(int, node_cert_ttl_h, 24 * 30,
          "Hours a node certificate is valid; edges renew after two thirds of it.");
ABSL_FLAG(int, tls_refresh_s, 10,
          "How often the certificate files are checked for rotation, in seconds.");

int main(int argc, char** argv) {
  fedge::app::Init(argc, argv,
                   "fedge-cloud: the federated learning coordinator.\n"
                   "  fedge-cloud --data_dir=/var/lib/fedge [--fleet_address=0.0.0.0:7070]");
  fedge::cloud::CloudServer::Options options;
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.fleet_address = absl::GetFlag(FLAGS_fleet_address);
  options.admin_address = absl::GetFlag(FLAGS_admin_address);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options.heartbeat_interval = absl::Milliseconds(absl::GetFlag(FLAGS_heartbeat_interval_ms));
  options.liveness_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_liveness_timeout_ms));
  options.max_update_norm = absl::GetFlag(FLAGS_max_update_norm);
  options.max_update_samples = absl::GetFlag(FLAGS_max_update_samples);
  options.max_connections = absl::GetFlag(FLAGS_max_connections);
  options.max_connections_per_address = absl::GetFlag(FLAGS_max_connections_per_address);
  options.handshake_timeout = absl::Seconds(absl::GetFlag(FLAGS_handshake_timeout_s));
  options.idle_connection_timeout = absl::Seconds(absl::GetFlag(FLAGS_idle_connection_timeout_s));
  options.node_transfers = absl::GetFlag(FLAGS_node_transfers);
  options.max_transfers = absl::GetFlag(FLAGS_max_transfers);
  options.node_calls_per_second = absl::GetFlag(FLAGS_node_calls_per_second);
  options.node_call_burst = absl::GetFlag(FLAGS_node_call_burst);
  options.upload_idle_timeout = absl::Seconds(absl::GetFlag(FLAGS_upload_idle_timeout_s));
  options.rest_address = absl::GetFlag(FLAGS_rest_address);
  options.webhook_urls = absl::GetFlag(FLAGS_webhook_urls);
  options.admin_tokens_file = absl::GetFlag(FLAGS_admin_tokens_file);
  options.insecure = absl::GetFlag(FLAGS_insecure);
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.tls_names = absl::GetFlag(FLAGS_tls_names);
  options.node_ca_cert = absl::GetFlag(FLAGS_node_ca_cert);
  options.node_ca_key = absl::GetFlag(FLAGS_node_ca_key);
  options.node_cert_ttl = absl::Hours(absl::GetFlag(FLAGS_node_cert_ttl_h));
  options.tls_refresh_interval_s = absl::GetFlag(FLAGS_tls_refresh_s);
  options.model_check.helper_path = absl::GetFlag(FLAGS_model_check_path);
  options.model_check.memory_mb = absl::GetFlag(FLAGS_model_check_memory_mb);
  options.model_check.cpu_seconds = absl::GetFlag(FLAGS_model_check_cpu_s);
  options.model_check.timeout = absl::Seconds(absl::GetFlag(FLAGS_model_check_timeout_s));
  options.model_check.max_entries = absl::GetFlag(FLAGS_model_check_max_entries);
  options.model_check.max_unpacked_mb = absl::GetFlag(FLAGS_model_check_max_unpacked_mb);
  if (!absl::GetFlag(FLAGS_webhook_secret_file).empty()) {
    std::ifstream in(absl::GetFlag(FLAGS_webhook_secret_file));
    if (!in || !std::getline(in, options.webhook_secret) || options.webhook_secret.empty()) {
      std::cerr << "fedge-cloud: cannot read a secret from --webhook_secret_file "
                << absl::GetFlag(FLAGS_webhook_secret_file) << "\n";
      return 2;
    }
  }
  // Every connection holds a descriptor: take what the hard limit allows (logged).
  const int64_t files = fedge::net::RaiseOpenFileLimit();
  LOG(INFO) << "open-file limit: " << files;
  auto server = fedge::cloud::CloudServer::Start(options);
  if (!server.ok()) {
    std::cerr << "fedge-cloud: " << server.status().message() << "\n";
    return 2;
  }
  const std::string ports_file = absl::GetFlag(FLAGS_ports_file);
  if (!ports_file.empty() &&
      !fedge::app::WriteFileAtomically(
          ports_file, absl::StrCat("fleet=", (*server)->fleet_port(), "\nadmin=",
                                   (*server)->admin_port(), "\nmetrics=",
                                   (*server)->metrics_port(), "\nrest=",
                                   (*server)->rest_port(), "\n"))) {
    std::cerr << "fedge-cloud: cannot write --ports_file " << ports_file << "\n";
    return 2;
  }
  int sig = fedge::app::WaitForTermination();
  LOG(INFO) << "signal " << sig << " received";
  // Whatever a shutdown waits on, the process ends within its grace period: what it holds is
  // on disk already (SQLite transactions, blobs renamed into place), and jobs resume.
  const int grace_s = absl::GetFlag(FLAGS_shutdown_grace_s);
  std::thread([grace_s] {
    std::this_thread::sleep_for(std::chrono::seconds(grace_s));
    LOG(ERROR) << "shutdown did not finish within --shutdown_grace_s=" << grace_s
               << "; exiting now";
    std::_Exit(1);
  }).detach();
  (*server)->Shutdown();
  return 0;
}
