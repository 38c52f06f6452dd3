// The rollout controller against hand-driven edges over real gRPC: the test plays each node,
// answering DeployCommands with DeployStatus and sending the health it chooses.

#include <atomic>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/sync/mutex.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"

namespace fedge {
namespace {

// A node that runs whatever it is told, reporting `accuracy` on 50 feedback labels for any
// version other than the one it started with.
class ScriptedNode {
 public:
  ScriptedNode(std::shared_ptr<grpc::Channel> channel, const std::string& id,
               const v1::VersionRef& start, double accuracy)
      : edge_(channel, id, {{start.model(), start}}), accuracy_(accuracy), start_(start) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~ScriptedNode() {
    edge_.Cancel();
    thread_.join();
    edge_.Close();
  }
  int64_t active() {
    MutexLock lock(&mu_);
    return active_.version();
  }
  int commands() { return commands_.load(); }

 private:
  void Loop() {
    {
      MutexLock lock(&mu_);
      active_ = start_;
    }
    v1::CloudMessage msg;
    while (edge_.Next(&msg)) {
      if (!msg.has_deploy()) continue;
      ++commands_;
      const v1::VersionRef& v = msg.deploy().version();
      {
        MutexLock lock(&mu_);
        active_ = v;
      }
      v1::EdgeMessage status;
      *status.mutable_deploy_status()->mutable_version() = v;
      status.mutable_deploy_status()->set_ok(true);
      edge_.Send(status);
      v1::EdgeMessage health;
      auto* h = health.mutable_health();
      h->set_model(v.model());
      *h->mutable_version() = v;
      h->set_predictions(50);
      h->set_feedback(50);
      h->set_feedback_correct(v.sha256() == start_.sha256()
                                  ? 50
                                  : static_cast<int64_t>(accuracy_ * 50));
      edge_.Send(health);
    }
  }

  testing::FakeEdge edge_;
  const double accuracy_;
  const v1::VersionRef start_;
  Mutex mu_;
  v1::VersionRef active_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> commands_{0};
  std::thread thread_;
};

class DeployTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cloud = testing::TestCloud::Start(dir_.path());
    ASSERT_TRUE(cloud.ok()) << cloud.status();
    cloud_ = std::move(*cloud);
    admin_ = cloud_.admin.get();
    for (int i = 0; i < 3; ++i) {
      auto header = testing::SyntheticModelHeader("m");
      header.mutable_builtin()->set_seed(100 + i);  // distinct weights, distinct digests
      auto v = testing::Register(admin_, header);
      ASSERT_TRUE(v.ok()) << v.status();
      refs_.push_back(Ref(*v));
    }
  }
  void TearDown() override {
    nodes_.clear();
    cloud_.server->Shutdown();
  }
  static v1::VersionRef Ref(const v1::Version& v) {
    v1::VersionRef r;
    r.set_model(v.model());
    r.set_version(v.version());
    r.set_sha256(v.sha256());
    return r;
  }
  void StartNodes(int n, double accuracy) {
    for (int i = 0; i < n; ++i) {
      nodes_.push_back(std::make_unique<ScriptedNode>(cloud_.fleet_channel, absl::StrCat("n", i),
                                                      refs_[0], accuracy));
    }
    WaitUntil([&] {
      v1::ListNodesResponse resp;
      auto ctx = testing::Context();
      admin_->ListNodes(ctx.get(), {}, &resp);
      return resp.nodes_size() == n;
    });
  }
  void WaitUntil(const std::function<bool()>& done) {
    for (int i = 0; i < 1000 && !done(); ++i) absl::SleepFor(absl::Milliseconds(10));
    ASSERT_TRUE(done());
  }
  v1::Deployment Create(int64_t version, std::vector<double> waves, int64_t soak_ms,
                        grpc::Status* status = nullptr) {
    v1::CreateDeploymentRequest req;
    req.set_model("m");
    req.set_version(version);
    for (double w : waves) req.mutable_strategy()->add_waves(w);
    req.mutable_strategy()->set_soak_ms(soak_ms);
    req.mutable_strategy()->mutable_gate()->set_min_feedback_accuracy(0.8);
    req.mutable_strategy()->mutable_gate()->set_min_feedback(20);
    v1::Deployment d;
    auto ctx = testing::Context();
    grpc::Status st = admin_->CreateDeployment(ctx.get(), req, &d);
    if (status != nullptr) *status = st;
    else EXPECT_TRUE(st.ok()) << st.error_message();
    return d;
  }
  v1::Deployment Get(const std::string& id) {
    v1::GetDeploymentRequest req;
    req.set_id(id);
    v1::Deployment d;
    auto ctx = testing::Context();
    EXPECT_TRUE(admin_->GetDeployment(ctx.get(), req, &d).ok());
    return d;
  }
  v1::Deployment Act(const std::string& what, const std::string& id) {
    v1::DeploymentActionRequest req;
    req.set_id(id);
    req.set_reason("test");
    v1::Deployment d;
    auto ctx = testing::Context();
    grpc::Status st = what == "pause"    ? admin_->PauseDeployment(ctx.get(), req, &d)
                      : what == "resume" ? admin_->ResumeDeployment(ctx.get(), req, &d)
                                         : admin_->RollbackDeployment(ctx.get(), req, &d);
    EXPECT_TRUE(st.ok()) << what << ": " << st.error_message();
    return d;
  }

  testing::TempDir dir_;
  testing::TestCloud cloud_;
  v1::Admin::Stub* admin_ = nullptr;
  std::vector<v1::VersionRef> refs_;
  std::vector<std::unique_ptr<ScriptedNode>> nodes_;
};

TEST_F(DeployTest, HealthyWavesPromoteUntilEveryNodeRunsTheVersion) {
  StartNodes(4, /*accuracy=*/0.95);
  v1::Deployment d = Create(2, {0.25, 0.5, 1.0}, /*soak_ms=*/100);
  WaitUntil([&] { return Get(d.id()).state() == v1::DEPLOYMENT_SUCCEEDED; });
  v1::Deployment done = Get(d.id());
  std::map<int, int> per_wave;
  for (const auto& n : done.nodes()) ++per_wave[n.wave()];
  EXPECT_EQ(per_wave, (std::map<int, int>{{1, 1}, {2, 1}, {3, 2}}));
  for (auto& node : nodes_) EXPECT_EQ(node->active(), 2);
}

TEST_F(DeployTest, ABreachInTheFirstWaveRollsBackOnlyWhatReceivedTheVersion) {
  StartNodes(4, /*accuracy=*/0.4);
  v1::Deployment d = Create(2, {0.25, 1.0}, /*soak_ms=*/5000);
  WaitUntil([&] { return Get(d.id()).state() == v1::DEPLOYMENT_ROLLED_BACK; });
  v1::Deployment done = Get(d.id());
  EXPECT_NE(done.status_message().find("accuracy on feedback 0.400 < 0.800"), std::string::npos)
      << done.status_message();
  WaitUntil([&] {
    for (auto& node : nodes_) {
      if (node->active() != 1) return false;
    }
    return true;
  });
  int touched = 0;
  for (auto& node : nodes_) touched += node->commands() > 0;
  EXPECT_EQ(touched, 1);  // the second wave never started
  v1::ListAuditRequest req;
  req.set_deployment_id(d.id());
  v1::ListAuditResponse audit;
  auto ctx = testing::Context();
  ASSERT_TRUE(admin_->ListAudit(ctx.get(), req, &audit).ok());
  ASSERT_GE(audit.entries_size(), 2);
  EXPECT_EQ(audit.entries(0).action(), "deploy_rollback");
  EXPECT_EQ(audit.entries(0).principal(), "controller");
}

TEST_F(DeployTest, PauseHoldsTheWaveResumeContinuesAndRollbackRestores) {
  StartNodes(2, /*accuracy=*/0.95);
  v1::Deployment d = Create(2, {0.5, 1.0}, /*soak_ms=*/400);
  EXPECT_EQ(Act("pause", d.id()).state(), v1::DEPLOYMENT_PAUSED);
  absl::SleepFor(absl::Milliseconds(700));  // longer than the soak: a paused wave stays put
  v1::Deployment paused = Get(d.id());
  EXPECT_EQ(paused.state(), v1::DEPLOYMENT_PAUSED);
  EXPECT_EQ(paused.current_wave(), 1);
  EXPECT_EQ(Act("resume", d.id()).state(), v1::DEPLOYMENT_RUNNING);
  WaitUntil([&] { return Get(d.id()).state() == v1::DEPLOYMENT_SUCCEEDED; });
  v1::Deployment rolled = Act("rollback", d.id());
  EXPECT_EQ(rolled.state(), v1::DEPLOYMENT_ROLLED_BACK);
  WaitUntil([&] { return nodes_[0]->active() == 1 && nodes_[1]->active() == 1; });
}

TEST_F(DeployTest, ASchemaChangeIsRefusedUnlessAllowed) {
  StartNodes(1, 0.95);
  auto other = testing::SyntheticModelHeader("m");
  other.mutable_builtin()->add_hidden(8);  // another architecture
  auto v4 = testing::Register(admin_, other);
  ASSERT_TRUE(v4.ok());
  grpc::Status st;
  Create(v4->version(), {}, 0, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(st.error_message().find("another schema"), std::string::npos) << st.error_message();
  Create(99, {}, 0, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(DeployTest, ANodeThatWasOfflineConvergesWhenItReturns) {
  StartNodes(2, 0.95);
  v1::Deployment d = Create(3, {}, /*soak_ms=*/0);
  WaitUntil([&] { return Get(d.id()).state() == v1::DEPLOYMENT_SUCCEEDED; });
  // n1 goes away and comes back still running v1 (say its disk was restored).
  nodes_.pop_back();
  auto back = std::make_unique<ScriptedNode>(cloud_.fleet_channel, "n1", refs_[0], 0.95);
  WaitUntil([&] { return back->active() == 3; });
  EXPECT_EQ(back->commands(), 1);
}

}  // namespace
}  // namespace fedge
