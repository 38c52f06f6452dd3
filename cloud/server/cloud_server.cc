#include "cloud/server/cloud_server.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "cloud/api/admin_auth.h"
#include "cloud/api/admin_service.h"
#include "cloud/api/fleet_service.h"
#include "cloud/api/rest_gateway.h"
#include "cloud/deploy/controller.h"
#include "cloud/enroll/enrollment.h"
#include "cloud/evaluation/federated.h"
#include "cloud/policy/retrainer.h"
#include "cloud/events/event_log.h"
#include "cloud/fleet/fleet.h"
#include "cloud/jobs/job_manager.h"
#include "cloud/models/sandbox.h"
#include "cloud/registry/registry.h"
#include "common/auth/token_store.h"
#include "common/net/servers.h"
#include "common/status/status.h"
#include "glog/logging.h"
#include "google/protobuf/descriptor.h"

namespace fedge::cloud {
namespace {

absl::Status MakeDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", dir, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

struct CloudServer::Impl {
  std::unique_ptr<registry::Registry> registry;
  std::unique_ptr<events::EventLog> events;
  std::unique_ptr<inbox::Inbox> inbox;
  std::unique_ptr<fleet::Fleet> fleet;
  std::unique_ptr<enroll::Enrollment> enrollment;  // null: insecure
  net::ServerTls tls;                              // cert_file empty: insecure
  std::string node_ca_file;
  std::unique_ptr<deploy::Controller> deploy;
  std::unique_ptr<evaluation::FederatedEvaluator> evaluator;
  std::unique_ptr<api::FleetService> fleet_service;
  std::unique_ptr<auth::TokenStore> admin_tokens;  // null: authentication off
  std::unique_ptr<api::AdminAuthorizer> admin_authorizer;
  std::unique_ptr<api::AdminService> admin_service;
  net::StartedGrpcServer fleet_server;
  net::StartedGrpcServer admin_server;
  std::unique_ptr<net::HttpServer> http;
  std::unique_ptr<api::RestGateway> rest;
  // Declared last so that they are destroyed first, jobs before the retrainer its threads call:
  // their threads call into what is above.
  std::unique_ptr<policy::Retrainer> retrainer;
  std::unique_ptr<jobs::JobManager> jobs;
  bool shut_down = false;
};

// The node CA, the listeners' certificate and the enrollment store.
absl::Status CloudServer::SetUpTls(const Options& options, Impl* impl) {
  FEDGE_RETURN_IF_ERROR(MakeDir(options.data_dir));
  enroll::CaFiles ca;
  if (options.node_ca_cert.empty() != options.node_ca_key.empty()) {
    return absl::InvalidArgumentError(
        "--node_ca_cert and --node_ca_key go together (or neither: the CA in <data_dir>/ca)");
  }
  if (!options.node_ca_cert.empty()) {
    ca = {options.node_ca_cert, options.node_ca_key};
  } else {
    FEDGE_ASSIGN_OR_RETURN(ca, enroll::LoadOrCreateCa(options.data_dir + "/ca", options.clock));
  }
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together (or neither: a certificate from the node CA)");
  }
  impl->tls.refresh_interval_s = options.tls_refresh_interval_s;
  if (!options.tls_cert.empty()) {
    impl->tls.cert_file = options.tls_cert;
    impl->tls.key_file = options.tls_key;
  } else {
    if (options.tls_names.empty()) {
      return absl::InvalidArgumentError(
          "--tls_names is empty: name the hosts and addresses edges dial (e.g. "
          "fedge.example.com,10.0.0.5)");
    }
    FEDGE_ASSIGN_OR_RETURN(enroll::ServerCertFiles server,
                           enroll::EnsureServerCertificate(ca, options.data_dir + "/tls",
                                                           options.tls_names, options.clock));
    impl->tls.cert_file = server.cert_path;
    impl->tls.key_file = server.key_path;
  }
  impl->node_ca_file = ca.cert_path;
  enroll::Enrollment::Options enroll_opts;
  enroll_opts.data_dir = options.data_dir;
  enroll_opts.ca = ca;
  enroll_opts.certificate_ttl = options.node_cert_ttl;
  enroll_opts.clock = options.clock;
  fleet::Fleet* fleet = impl->fleet.get();
  enroll_opts.on_refused = [fleet](const std::string& node_id, const absl::Status& why) {
    fleet->Close(node_id, why);
  };
  FEDGE_ASSIGN_OR_RETURN(impl->enrollment, enroll::Enrollment::Open(enroll_opts));
  LOG(INFO) << "TLS on: listeners serve " << impl->tls.cert_file
            << "; edges' certificates are verified against " << ca.cert_path;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CloudServer>> CloudServer::Start(Options options) {
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("--data_dir is required: where the registry lives");
  }
  if (!(options.node_calls_per_second > 0) || !(options.node_call_burst >= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--node_calls_per_second (", options.node_calls_per_second, ") must be > 0 and ",
        "--node_call_burst (", options.node_call_burst, ") >= 1"));
  }
  if (options.max_update_samples < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--max_update_samples (",
                                                   options.max_update_samples, ") must be >= 1"));
  }
  if (options.max_connections < 0 || options.max_connections_per_address < 0 ||
      options.node_transfers < 1 || options.max_transfers < options.node_transfers ||
      options.handshake_timeout <= absl::ZeroDuration() ||
      options.idle_connection_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "connection limits out of range: --max_connections (", options.max_connections,
        ") and --max_connections_per_address (", options.max_connections_per_address,
        ") must be >= 0 (0: derived, or no per-address limit), --node_transfers (",
        options.node_transfers, ") >= 1 and <= --max_transfers (", options.max_transfers,
        "), --handshake_timeout_s and --idle_connection_timeout_s > 0"));
  }
  if (options.upload_idle_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--upload_idle_timeout_s must be > 0");
  }
  auto impl = std::make_unique<Impl>();
  // A new Admin method without a role fails here (and in a test), not open to every caller.
  FEDGE_RETURN_IF_ERROR(api::CheckAdminMethodRoles(
      *google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          v1::Admin::service_full_name())));
  if (!options.admin_tokens_file.empty()) {
    auth::TokenStore::Options token_opts;
    token_opts.path = options.admin_tokens_file;
    auto tokens = auth::TokenStore::Open(token_opts);
    if (!tokens.ok()) {
      return absl::Status(tokens.status().code(),
                          absl::StrCat("--admin_tokens_file: ", tokens.status().message()));
    }
    impl->admin_tokens = std::move(*tokens);
    LOG(INFO) << "Admin API authentication on: " << impl->admin_tokens->size() << " token(s) from "
              << options.admin_tokens_file << " (re-read when the file changes)";
  } else {
    LOG(WARNING) << "*** The Admin API (gRPC and REST) is OPEN: every caller is an admin and "
                    "names itself. Turn authentication on with --admin_tokens_file=PATH, "
                    "holding lines made by `fedgectl tokens create --name=NAME --role=ROLE` "
                    "(see docs/security.md). ***";
  }
  impl->admin_authorizer = std::make_unique<api::AdminAuthorizer>(impl->admin_tokens.get());
  FEDGE_ASSIGN_OR_RETURN(impl->registry,
                         registry::Registry::Open({options.data_dir, options.clock}));
  events::EventLog::Options event_opts;
  event_opts.data_dir = options.data_dir;
  event_opts.clock = options.clock;
  for (const std::string& url : options.webhook_urls) event_opts.webhooks.push_back({url, {}});
  event_opts.webhook_secret = options.webhook_secret;
  FEDGE_ASSIGN_OR_RETURN(impl->events, events::EventLog::Open(event_opts));
  events::EventLog* event_log = impl->events.get();
  inbox::Inbox::Options inbox_opts;
  inbox_opts.data_dir = options.data_dir;
  inbox_opts.clock = options.clock;
  FEDGE_ASSIGN_OR_RETURN(impl->inbox, inbox::Inbox::Open(inbox_opts));

  fleet::Fleet::Options fleet_opts_core;
  fleet_opts_core.clock = options.clock;
  fleet_opts_core.liveness_timeout = options.liveness_timeout;
  fleet_opts_core.heartbeat_interval = options.heartbeat_interval;
  fleet_opts_core.on_presence = [event_log](const std::string& node, bool online) {
    v1::Event e;
    e.set_type(online ? "node.online" : "node.offline");
    e.set_node_id(node);
    e.set_message(absl::StrCat(node, online ? " connected" : " disconnected"));
    event_log->Append(std::move(e));
  };
  impl->fleet = std::make_unique<fleet::Fleet>(fleet_opts_core);
  if (options.insecure) {
    LOG(WARNING) << "*** --insecure: the Fleet, Admin and REST ports are PLAINTEXT. Edges name "
                    "themselves and anyone who can reach the Fleet port can pose as any node. "
                    "For local demos only; see docs/security.md to turn TLS on. ***";
  } else {
    FEDGE_RETURN_IF_ERROR(SetUpTls(options, impl.get()));
  }

  deploy::Controller::Options deploy_opts;
  deploy_opts.registry = impl->registry.get();
  deploy_opts.fleet = impl->fleet.get();
  deploy_opts.events = event_log;
  deploy_opts.clock = options.clock;
  deploy_opts.tick = options.deploy_tick;
  impl->deploy = std::make_unique<deploy::Controller>(deploy_opts);

  jobs::JobManager::Options job_opts;
  job_opts.registry = impl->registry.get();
  job_opts.fleet = impl->fleet.get();
  job_opts.clock = options.clock;
  job_opts.max_update_norm = options.max_update_norm;
  job_opts.max_update_samples = options.max_update_samples;
  job_opts.model_check = options.model_check;
  if (job_opts.model_check.temp_dir.empty()) job_opts.model_check.temp_dir = options.data_dir;
  job_opts.events = event_log;
  Impl* raw = impl.get();
  // A model with a gate policy has every new version validated as it is registered.
  job_opts.on_registered = [raw](const v1::Version& version) {
    auto model = raw->registry->GetModel(version.model());
    if (!model.ok() || (!model->gate_policy().holdout().has_synthetic() &&
                        model->gate_policy().holdout().csv_path().empty() &&
                        !model->gate_policy().federated())) {
      raw->retrainer->OnRegistered(version);  // no gate: an automatic rollout is held
      return;
    }
    auto validated = raw->admin_service->RunGate(version, model->gate_policy(), "gate",
                                                 "validated on registration");
    if (!validated.ok()) {
      LOG(WARNING) << "validation of " << version.model() << " v" << version.version()
                   << " failed to run: " << validated.status();
    }
    raw->retrainer->OnRegistered(validated.ok() ? *validated : version);
  };
  impl->jobs = std::make_unique<jobs::JobManager>(job_opts);
  policy::Retrainer::Options retrain_opts;
  retrain_opts.registry = impl->registry.get();
  retrain_opts.fleet = impl->fleet.get();
  retrain_opts.jobs = impl->jobs.get();
  retrain_opts.deploy = impl->deploy.get();
  retrain_opts.events = event_log;
  retrain_opts.inbox = impl->inbox.get();
  retrain_opts.clock = options.clock;
  impl->retrainer = std::make_unique<policy::Retrainer>(retrain_opts);
  impl->evaluator = std::make_unique<evaluation::FederatedEvaluator>(impl->fleet.get());
  api::FleetService::Options fleet_service;
  fleet_service.fleet = impl->fleet.get();
  fleet_service.jobs = impl->jobs.get();
  fleet_service.registry = impl->registry.get();
  fleet_service.deploy = impl->deploy.get();
  fleet_service.evaluator = impl->evaluator.get();
  fleet_service.events = event_log;
  fleet_service.retrainer = impl->retrainer.get();
  fleet_service.inbox = impl->inbox.get();
  fleet_service.upload_dir = options.data_dir + "/uploads";
  fleet_service.rate_limit.per_second = options.node_calls_per_second;
  fleet_service.rate_limit.burst = options.node_call_burst;
  fleet_service.upload_idle_timeout = options.upload_idle_timeout;
  fleet_service.streams.per_node = options.node_transfers;
  fleet_service.streams.total = options.max_transfers;
  fleet_service.enrollment = impl->enrollment.get();
  impl->fleet_service = std::make_unique<api::FleetService>(fleet_service);
  api::AdminService::Options admin_core;
  admin_core.fleet = impl->fleet.get();
  admin_core.jobs = impl->jobs.get();
  admin_core.registry = impl->registry.get();
  admin_core.deploy = impl->deploy.get();
  admin_core.events = event_log;
  admin_core.evaluator = impl->evaluator.get();
  admin_core.retrainer = impl->retrainer.get();
  admin_core.authorizer = impl->admin_authorizer.get();
  admin_core.enrollment = impl->enrollment.get();
  admin_core.model_check = options.model_check;
  if (admin_core.model_check.temp_dir.empty()) admin_core.model_check.temp_dir = options.data_dir;
  impl->admin_service = std::make_unique<api::AdminService>(admin_core);

  net::GrpcServerOptions fleet_opts;
  fleet_opts.address = options.fleet_address;
  fleet_opts.services = {{impl->fleet_service.get(), v1::Fleet::service_full_name()}};
  fleet_opts.metrics_prefix = "fedge_cloud";
  fleet_opts.tls = impl->tls;
  if (!impl->tls.cert_file.empty()) fleet_opts.tls.client_ca_file = impl->node_ca_file;
  fleet_opts.connections =
      net::ConnectionLimits{options.max_connections, options.max_connections_per_address};
  fleet_opts.handshake_timeout_ms =
      static_cast<int>(absl::ToInt64Milliseconds(options.handshake_timeout));
  fleet_opts.max_connection_idle_ms =
      static_cast<int>(absl::ToInt64Milliseconds(options.idle_connection_timeout));
  // A Session and the node's transfers, with room to spare; more are refused by HTTP/2.
  fleet_opts.max_concurrent_streams = 64;
  FEDGE_ASSIGN_OR_RETURN(impl->fleet_server, net::StartGrpcServer(fleet_opts));
  net::GrpcServerOptions admin_opts;
  admin_opts.address = options.admin_address;
  admin_opts.services = {{impl->admin_service.get(), v1::Admin::service_full_name()}};
  admin_opts.max_sync_threads = 16;
  admin_opts.metrics_prefix = "fedge_cloud";
  admin_opts.tls = impl->tls;
  admin_opts.connections = fleet_opts.connections;
  admin_opts.handshake_timeout_ms = fleet_opts.handshake_timeout_ms;
  admin_opts.max_concurrent_streams = 256;
  FEDGE_ASSIGN_OR_RETURN(impl->admin_server, net::StartGrpcServer(admin_opts));
  std::string host;
  int port = 0;
  FEDGE_RETURN_IF_ERROR(net::ParseHostPort(options.metrics_address, &host, &port));
  FEDGE_ASSIGN_OR_RETURN(impl->http, net::HttpServer::Start(host, port, nullptr));
  if (!options.rest_address.empty()) {
    api::RestGateway::Options rest;
    FEDGE_RETURN_IF_ERROR(net::ParseHostPort(options.rest_address, &rest.host, &rest.port));
    rest.admin_channel = impl->admin_server.server->InProcessChannel(grpc::ChannelArguments());
    rest.tls_cert_file = impl->tls.cert_file;
    rest.tls_key_file = impl->tls.key_file;
    FEDGE_ASSIGN_OR_RETURN(impl->rest, api::RestGateway::Start(rest));
  }

  FEDGE_RETURN_IF_ERROR(impl->jobs->ResumeUnfinished());
  FEDGE_RETURN_IF_ERROR(impl->deploy->Start());
  impl->retrainer->Start();
  LOG(INFO) << "fedge-cloud serving: fleet port " << impl->fleet_server.port << ", admin port "
            << impl->admin_server.port << ", metrics port " << impl->http->port()
            << ", REST port " << (impl->rest ? impl->rest->port() : 0)
            << ", data in " << options.data_dir;
  return std::unique_ptr<CloudServer>(new CloudServer(std::move(impl)));
}

CloudServer::CloudServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CloudServer::~CloudServer() { Shutdown(); }

int CloudServer::fleet_port() const { return impl_->fleet_server.port; }
int CloudServer::admin_port() const { return impl_->admin_server.port; }
int CloudServer::metrics_port() const { return impl_->http->port(); }
int CloudServer::rest_port() const { return impl_->rest ? impl_->rest->port() : 0; }
registry::Registry* CloudServer::registry() { return impl_->registry.get(); }
std::string CloudServer::node_ca_file() const { return impl_->node_ca_file; }
std::string CloudServer::tls_cert_file() const { return impl_->tls.cert_file; }

void CloudServer::Shutdown() {
  if (impl_->shut_down) return;
  impl_->shut_down = true;
  LOG(INFO) << "fedge-cloud shutting down";
  // A model check or a user model's evaluation could run for minutes: end them now, so that
  // the threads waiting on them return.
  if (int killed = models::KillRunningModelChecks(); killed > 0) {
    LOG(INFO) << "ended " << killed << " running model check(s)";
  }
  impl_->retrainer->Stop();
  impl_->evaluator->Shutdown();
  impl_->jobs->Shutdown();
  impl_->deploy->Stop();
  if (impl_->rest) impl_->rest->Stop();
  impl_->fleet->CloseAll(absl::UnavailableError("the coordinator is shutting down; reconnect"));
  net::StopGrpcServer(&impl_->fleet_server, std::chrono::seconds(5));
  net::StopGrpcServer(&impl_->admin_server, std::chrono::seconds(5));
  impl_->http->Stop();
  impl_->events->Shutdown();
}

}  // namespace fedge::cloud
