#include "common/net/servers.h"

#include <httplib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/metrics/metrics.h"
#include "common/net/grpc_metrics.h"
#include "glog/logging.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace fedge::net {

absl::StatusOr<StartedGrpcServer> StartGrpcServer(const GrpcServerOptions& options) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  StartedGrpcServer started;
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls.cert_file.empty()) {
    const ServerTls& tls = options.tls;
    for (const auto& [path, what] : {std::pair{tls.cert_file, "TLS certificate"},
                                     std::pair{tls.key_file, "TLS key"}}) {
      if (absl::Status st = CheckReadable(path, what); !st.ok()) return st;
    }
    std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider;
    if (tls.client_ca_file.empty()) {
      provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          tls.key_file, tls.cert_file, tls.refresh_interval_s);
    } else {
      if (absl::Status st = CheckReadable(tls.client_ca_file, "client CA"); !st.ok()) return st;
      provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          tls.key_file, tls.cert_file, tls.client_ca_file, tls.refresh_interval_s);
    }
    grpc::experimental::TlsServerCredentialsOptions tls_options(provider);
    tls_options.watch_identity_key_cert_pairs();
    if (tls.client_ca_file.empty()) {
      tls_options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    } else {
      tls_options.watch_root_certs();
      tls_options.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    }
    credentials = grpc::experimental::TlsServerCredentials(tls_options);
  }
  if (options.connections.has_value()) {
    std::string host;
    int port = 0;
    if (absl::Status st = ParseHostPort(options.address, &host, &port); !st.ok()) return st;
    const std::string prefix = options.metrics_prefix;
    auto gate = ConnectionGate::Listen(host, port, *options.connections,
                                       [prefix](const char* reason) {
                                         if (prefix.empty()) return;
                                         metrics::CounterFamily(
                                             prefix + "_connections_refused_total",
                                             "Connections closed at once, or the oldest of "
                                             "their address closed, by a connection limit.")
                                             .Add({{"reason", reason}})
                                             .Increment();
                                       });
    if (!gate.ok()) return gate.status();
    started.gate = std::move(*gate);
    started.port = started.gate->port();
    started.acceptor = builder.experimental().AddExternalConnectionAcceptor(
        grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD, credentials);
    LOG(INFO) << "listening on " << host << ":" << started.port << " for at most "
              << started.gate->max_connections() << " connections ("
              << options.connections->per_address << " per address)";
  } else {
    builder.AddListeningPort(options.address, credentials, &started.port);
  }
  if (options.handshake_timeout_ms > 0) {
    builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, options.handshake_timeout_ms);
  }
  if (options.max_concurrent_streams > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  }
  if (options.max_connection_idle_ms > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, options.max_connection_idle_ms);
  }
  for (const NamedService& s : options.services) builder.RegisterService(s.service);
  if (!options.metrics_prefix.empty()) {
    std::vector<std::string> names;
    for (const NamedService& s : options.services) names.push_back(s.name);
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(MakeGrpcMetrics(options.metrics_prefix, names));
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             kKeepaliveTimeMs / 2);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  grpc::ResourceQuota quota("fedge");
  quota.SetMaxThreads(options.max_sync_threads);
  builder.SetResourceQuota(quota);
  started.server = builder.BuildAndStart();
  if (started.server == nullptr || started.port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.address, " (in use, or not a local address?)"));
  }
  if (auto* health = started.server->GetHealthCheckService()) {
    for (const NamedService& s : options.services) health->SetServingStatus(s.name, true);
  }
  if (started.gate != nullptr) {
    grpc::experimental::ExternalConnectionAcceptor* acceptor = started.acceptor.get();
    started.gate->Start([acceptor](int listener_fd, int fd) {
      grpc::experimental::ExternalConnectionAcceptor::NewConnectionParameters p;
      p.listener_fd = listener_fd;
      p.fd = fd;
      acceptor->HandleNewConnection(&p);
    });
  }
  return started;
}

void StopGrpcServer(StartedGrpcServer* server, std::chrono::milliseconds grace) {
  if (server->server == nullptr) return;
  if (server->gate != nullptr) server->gate->Stop();
  if (auto* health = server->server->GetHealthCheckService()) health->Shutdown();
  server->server->Shutdown(std::chrono::system_clock::now() + grace);
}

absl::Status CheckReadable(const std::string& path, absl::string_view what) {
  if (path.empty()) return absl::FailedPreconditionError(absl::StrCat(what, ": no file given"));
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read the ", what, " ", path, ": ", std::strerror(errno)));
  }
  std::fclose(f);
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, const ChannelTls& tls) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Reconnect quickly after an outage; the agent adds its own jittered backoff on top.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  if (tls.ca_file.empty()) {
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider;
  if (tls.cert_file.empty()) {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        tls.ca_file, tls.refresh_interval_s);
  } else {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        tls.key_file, tls.cert_file, tls.ca_file, tls.refresh_interval_s);
  }
  grpc::experimental::TlsChannelCredentialsOptions tls_options;
  tls_options.set_certificate_provider(provider);
  tls_options.watch_root_certs();
  if (!tls.cert_file.empty()) tls_options.watch_identity_key_cert_pairs();
  if (!tls.server_name.empty()) args.SetSslTargetNameOverride(tls.server_name);
  return grpc::CreateCustomChannel(target, grpc::experimental::TlsCredentials(tls_options), args);
}

absl::Status ParseHostPort(const std::string& address, std::string* host, int* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", address, "' is not host:port (for example 127.0.0.1:9090)"));
  }
  *host = address.substr(0, colon);
  if (!absl::SimpleAtoi(address.substr(colon + 1), port) || *port < 0 || *port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", address, "' has no valid port (0-65535)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& host, int port,
                                                              std::function<bool()> healthy) {
  std::unique_ptr<HttpServer> http(new HttpServer);
  http->server_ = std::make_unique<httplib::Server>();
  http->server_->Get("/metrics", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics::RenderText(), "text/plain; version=0.0.4");
  });
  http->server_->Get("/healthz", [healthy](const httplib::Request&, httplib::Response& res) {
    const bool ok = healthy ? healthy() : true;
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ok\n" : "unhealthy\n", "text/plain");
  });
  if (port == 0) {
    http->port_ = http->server_->bind_to_any_port(host);
  } else {
    http->port_ = http->server_->bind_to_port(host, port) ? port : -1;
  }
  if (http->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", host, ":", port));
  }
  httplib::Server* server = http->server_.get();
  http->thread_ = std::thread([server] { server->listen_after_bind(); });
  // httplib's stop() is lost if it comes before the accept loop runs, and Stop() would then
  // wait forever: a start-up that fails right after this point must still shut down.
  for (int i = 0; i < 10000 && !server->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return http;
}

void HttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

HttpServer::~HttpServer() { Stop(); }

}  // namespace fedge::net
