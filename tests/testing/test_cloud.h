#ifndef FEDGE_TESTS_TESTING_TEST_CLOUD_H_
#define FEDGE_TESTS_TESTING_TEST_CLOUD_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cloud/server/cloud_server.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "grpcpp/channel.h"

namespace fedge::testing {

// A real coordinator on 127.0.0.1 port 0, with a channel to its Fleet port and an Admin stub.
struct TestCloud {
  std::unique_ptr<cloud::CloudServer> server;
  std::shared_ptr<grpc::Channel> fleet_channel;
  std::unique_ptr<v1::Admin::Stub> admin;

  static absl::StatusOr<TestCloud> Start(const std::string& data_dir,
                                         absl::Duration heartbeat = absl::Seconds(5));
  std::string fleet_address() const;
};

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_TESTING_TEST_CLOUD_H_
