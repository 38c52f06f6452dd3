#ifndef FEDGE_COMMON_NET_SERVERS_H_
#define FEDGE_COMMON_NET_SERVERS_H_

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/net/connection_gate.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace httplib {
class Server;
}

namespace fedge::net {

// Keepalive settings shared by both sides, so that a dead peer is noticed within about
// kKeepaliveTimeMs + kKeepaliveTimeoutMs.
inline constexpr int kKeepaliveTimeMs = 20000;
inline constexpr int kKeepaliveTimeoutMs = 10000;

// A service and its full name (Service::service_full_name()), which the health service reports.
struct NamedService {
  grpc::Service* service;
  std::string name;
};

// TLS on a gRPC listener. The files are watched: a rotated certificate, key or CA bundle is
// used for new connections within refresh_interval_s, and connections already open stay up.
struct ServerTls {
  std::string cert_file;  // empty: plaintext
  std::string key_file;
  // Not empty: every client is asked for a certificate, and one that is presented must verify
  // against these CAs. A client without one still connects, so that it can enroll; every
  // other call refuses it (CallerNodeId in identity.h).
  std::string client_ca_file;
  int refresh_interval_s = 10;
};

// "host:port" is the listening address; port 0 picks a free port.
struct GrpcServerOptions {
  std::string address = "127.0.0.1:0";
  std::vector<NamedService> services;
  int max_sync_threads = 64;
  // Not empty: every call is counted and timed as <prefix>_grpc_requests_total and
  // <prefix>_grpc_request_duration_seconds (see grpc_metrics.h), e.g. "fedge_cloud".
  std::string metrics_prefix;
  ServerTls tls;
  // Not null: connections are accepted by a ConnectionGate with these limits instead of gRPC's
  // own listener (see connection_gate.h).
  std::optional<ConnectionLimits> connections;
  // A connection must finish its TLS and HTTP/2 handshake within this (0: gRPC's 120 s).
  int handshake_timeout_ms = 0;
  // A connection with no call open for this long is closed (0: never).
  int max_connection_idle_ms = 0;
  // Calls one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS; 0:
  // gRPC's default, unlimited). An edge needs its Session and a few transfers.
  int max_concurrent_streams = 0;
};

// A started gRPC server with the health service and server reflection.
struct StartedGrpcServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor;
  std::unique_ptr<ConnectionGate> gate;  // null: gRPC's own listener
};

// Builds and starts a server; each service reports SERVING to health checks. UNAVAILABLE if
// the address cannot be bound; FAILED_PRECONDITION naming the file if a TLS file cannot be
// read.
absl::StatusOr<StartedGrpcServer> StartGrpcServer(const GrpcServerOptions& options);

// Marks every service NOT_SERVING (so probes stop routing here), then stops the server,
// letting calls in flight finish for up to `grace`.
void StopGrpcServer(StartedGrpcServer* server, std::chrono::milliseconds grace);

// TLS on a client channel. The files are watched like ServerTls's.
struct ChannelTls {
  std::string ca_file;  // the CAs that may sign the server's certificate; empty: plaintext
  std::string cert_file;  // this client's certificate and key (both or neither): mutual TLS
  std::string key_file;
  // Checked against the server's certificate instead of the target's host, e.g. when edges
  // dial an IP address the certificate does not name.
  std::string server_name;
  int refresh_interval_s = 10;
};

// A client channel with matching keepalive; plaintext unless tls.ca_file is set.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, const ChannelTls& tls = {});

// OK if `path` is a readable file; FAILED_PRECONDITION naming `what` and the path otherwise.
absl::Status CheckReadable(const std::string& path, absl::string_view what);

// The plaintext HTTP listener for /metrics (Prometheus text) and /healthz. `healthy` decides
// whether /healthz answers 200 or 503.
class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& host, int port,
                                                           std::function<bool()> healthy);
  ~HttpServer();
  int port() const { return port_; }
  void Stop();

 private:
  HttpServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

// Splits "host:port"; INVALID_ARGUMENT names the problem.
absl::Status ParseHostPort(const std::string& address, std::string* host, int* port);

}  // namespace fedge::net

#endif  // FEDGE_COMMON_NET_SERVERS_H_
