#include "tests/testing/test_cloud.h"

#include "absl/strings/str_cat.h"
#include "common/net/servers.h"
#include "common/status/status.h"
#include "common/tensor/flat.h"

namespace fedge::testing {

absl::StatusOr<TestCloud> TestCloud::Start(const std::string& data_dir,
                                           absl::Duration heartbeat,
                                           const std::string& admin_tokens_file) {
  cloud::CloudServer::Options o;
  o.data_dir = data_dir;
  o.fleet_address = "127.0.0.1:0";
  o.admin_address = "127.0.0.1:0";
  o.metrics_address = "127.0.0.1:0";
  o.rest_address = "127.0.0.1:0";
  o.deploy_tick = absl::Milliseconds(20);
  o.heartbeat_interval = heartbeat;
  o.admin_tokens_file = admin_tokens_file;
  o.insecure = true;  // plaintext: FakeEdge names itself in metadata
  // Test binaries do not live beside fedge-cloud: name the helper that was built with them.
  o.model_check.helper_path = FEDGE_MODEL_CHECK_PATH;
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

void CloudWithModelTest::SetUp() {
  auto cloud = TestCloud::Start(dir_.path());
  ASSERT_TRUE(cloud.ok()) << cloud.status();
  cloud_ = std::move(cloud->server);
  channel_ = cloud->fleet_channel;
  admin_ = std::move(cloud->admin);
  auto base = Register(admin_.get(), SyntheticModelHeader("m"));
  ASSERT_TRUE(base.ok()) << base.status();
  base_ = *base;
  num_elements_ = Schema::FromProto(base_.schema()).NumElements();
}

void CloudWithModelTest::TearDown() {
  for (auto& e : edges_) e->Cancel();
  for (auto& t : threads_) t.join();
  for (auto& e : edges_) e->Close();
  if (cloud_) cloud_->Shutdown();
}

v1::Job CloudWithModelTest::StartJob(v1::JobSpec spec) {
  spec.set_model("m");
  v1::StartJobRequest req;
  *req.mutable_spec() = spec;
  v1::Job job;
  auto ctx = Context();
  grpc::Status st = admin_->StartJob(ctx.get(), req, &job);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return job;
}

}  // namespace fedge::testing
