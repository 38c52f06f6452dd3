#ifndef FEDGE_TESTS_TESTING_TEST_CLOUD_H_
#define FEDGE_TESTS_TESTING_TEST_CLOUD_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "cloud/server/cloud_server.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "grpcpp/channel.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace fedge::testing {

// A real coordinator on 127.0.0.1 port 0, with a channel to its Fleet port and an Admin stub.
struct TestCloud {
  std::unique_ptr<cloud::CloudServer> server;
  std::shared_ptr<grpc::Channel> fleet_channel;
  std::unique_ptr<v1::Admin::Stub> admin;

  // A non-empty `admin_tokens_file` turns Admin authentication on.
  static absl::StatusOr<TestCloud> Start(const std::string& data_dir,
                                         absl::Duration heartbeat = absl::Seconds(5),
                                         const std::string& admin_tokens_file = "");
  std::string fleet_address() const;
};

// A fixture: a real coordinator (TestCloud in a fresh directory) with model "m", the synthetic
// built-in MLP, registered as version 1 (base_). Tests drive hand-made edges against it: those
// in edges_, and the threads in threads_ that answer for them, are ended before the
// coordinator shuts down.
class CloudWithModelTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Starts a job of model "m" with `spec` (its model is set here); a refused start fails the
  // test and returns an empty Job.
  v1::Job StartJob(v1::JobSpec spec);

  TempDir dir_;
  std::unique_ptr<cloud::CloudServer> cloud_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  v1::Version base_;
  int64_t num_elements_ = 0;  // of base_'s schema
  std::vector<std::unique_ptr<FakeEdge>> edges_;
  std::vector<std::thread> threads_;
};

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_TESTING_TEST_CLOUD_H_
