#include "tests/testing/test_cloud.h"

#include "absl/strings/str_cat.h"
#include "common/net/servers.h"
#include "common/status/status.h"

namespace fedge::testing {

absl::StatusOr<TestCloud> TestCloud::Start(const std::string& data_dir,
                                           absl::Duration heartbeat) {
  cloud::CloudServer::Options o;
  o.data_dir = data_dir;
  o.fleet_address = "127.0.0.1:0";
  o.admin_address = "127.0.0.1:0";
  o.metrics_address = "127.0.0.1:0";
  o.rest_address = "127.0.0.1:0";
  o.deploy_tick = absl::Milliseconds(20);
  o.heartbeat_interval = heartbeat;
  TestCloud cloud;
  FEDGE_ASSIGN_OR_RETURN(cloud.server, cloud::CloudServer::Start(o));
  cloud.fleet_channel = net::MakeChannel(cloud.fleet_address());
  cloud.admin = v1::Admin::NewStub(
      net::MakeChannel(absl::StrCat("127.0.0.1:", cloud.server->admin_port())));
  return cloud;
}

std::string TestCloud::fleet_address() const {
  return absl::StrCat("127.0.0.1:", server->fleet_port());
}

}  // namespace fedge::testing
