#include "cloud/server/cloud_server.h"

#include "absl/strings/str_cat.h"
#include "cloud/api/admin_service.h"
#include "cloud/api/fleet_service.h"
#include "cloud/fleet/fleet.h"
#include "cloud/jobs/job_manager.h"
#include "cloud/registry/registry.h"
#include "common/net/servers.h"
#include "common/status/status.h"
#include "glog/logging.h"

namespace fedge::cloud {

struct CloudServer::Impl {
  std::unique_ptr<registry::Registry> registry;
  std::unique_ptr<fleet::Fleet> fleet;
  std::unique_ptr<jobs::JobManager> jobs;
  std::unique_ptr<api::FleetService> fleet_service;
  std::unique_ptr<api::AdminService> admin_service;
  net::StartedGrpcServer fleet_server;
  net::StartedGrpcServer admin_server;
  std::unique_ptr<net::HttpServer> http;
  bool shut_down = false;
};

absl::StatusOr<std::unique_ptr<CloudServer>> CloudServer::Start(Options options) {
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("--data_dir is required: where the registry lives");
  }
  auto impl = std::make_unique<Impl>();
  FEDGE_ASSIGN_OR_RETURN(impl->registry,
                         registry::Registry::Open({options.data_dir, options.clock}));
  impl->fleet = std::make_unique<fleet::Fleet>(fleet::Fleet::Options{
      options.clock, options.liveness_timeout, options.heartbeat_interval});
  impl->jobs = std::make_unique<jobs::JobManager>(jobs::JobManager::Options{
      impl->registry.get(), impl->fleet.get(), options.clock, options.max_update_norm});
  impl->fleet_service = std::make_unique<api::FleetService>(api::FleetService::Options{
      impl->fleet.get(), impl->jobs.get(), impl->registry.get()});
  impl->admin_service = std::make_unique<api::AdminService>(api::AdminService::Options{
      impl->fleet.get(), impl->jobs.get(), impl->registry.get()});

  net::GrpcServerOptions fleet_opts;
  fleet_opts.address = options.fleet_address;
  fleet_opts.services = {{impl->fleet_service.get(), v1::Fleet::service_full_name()}};
  FEDGE_ASSIGN_OR_RETURN(impl->fleet_server, net::StartGrpcServer(fleet_opts));
  net::GrpcServerOptions admin_opts;
  admin_opts.address = options.admin_address;
  admin_opts.services = {{impl->admin_service.get(), v1::Admin::service_full_name()}};
  admin_opts.max_sync_threads = 16;
  FEDGE_ASSIGN_OR_RETURN(impl->admin_server, net::StartGrpcServer(admin_opts));
  std::string host;
  int port = 0;
  FEDGE_RETURN_IF_ERROR(net::ParseHostPort(options.metrics_address, &host, &port));
  FEDGE_ASSIGN_OR_RETURN(impl->http, net::HttpServer::Start(host, port, nullptr));

  FEDGE_RETURN_IF_ERROR(impl->jobs->ResumeUnfinished());
  LOG(INFO) << "fedge-cloud serving: fleet port " << impl->fleet_server.port << ", admin port "
            << impl->admin_server.port << ", metrics port " << impl->http->port()
            << ", data in " << options.data_dir;
  return std::unique_ptr<CloudServer>(new CloudServer(std::move(impl)));
}

CloudServer::CloudServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CloudServer::~CloudServer() { Shutdown(); }

int CloudServer::fleet_port() const { return impl_->fleet_server.port; }
int CloudServer::admin_port() const { return impl_->admin_server.port; }
int CloudServer::metrics_port() const { return impl_->http->port(); }
registry::Registry* CloudServer::registry() { return impl_->registry.get(); }

void CloudServer::Shutdown() {
  if (impl_->shut_down) return;
  impl_->shut_down = true;
  LOG(INFO) << "fedge-cloud shutting down";
  impl_->jobs->Shutdown();
  impl_->fleet->CloseAll(absl::UnavailableError("the coordinator is shutting down; reconnect"));
  net::StopGrpcServer(&impl_->fleet_server, std::chrono::seconds(5));
  net::StopGrpcServer(&impl_->admin_server, std::chrono::seconds(5));
  impl_->http->Stop();
}

}  // namespace fedge::cloud
