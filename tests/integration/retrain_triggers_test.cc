// The data-arrival trigger and the drift filter of the retrainer, driven by hand-made edges over
// real gRPC: new labelled samples count fleet-wide from the model's latest version, and drift
// about a version a node no longer runs does not count.

#include "absl/strings/str_cat.h"
#include "common/tensor/flat.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"
#include "tests/testing/test_edges.h"

namespace fedge {
namespace {

class RetrainTriggersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cloud = testing::TestCloud::Start(dir_.path(), absl::Milliseconds(100));
    ASSERT_TRUE(cloud.ok()) << cloud.status();
    cloud_ = std::move(*cloud);
    auto v = testing::Register(cloud_.admin.get(), testing::SyntheticModelHeader("m"));
    ASSERT_TRUE(v.ok()) << v.status();
    base_ = *v;
  }
  void TearDown() override {
    for (auto& e : edges_) e->Close();
    cloud_.server->Shutdown();
  }

  testing::FakeEdge* Connect(const std::string& node, const std::string& epoch,
                             const std::map<std::string, v1::VersionRef>& active = {}) {
    edges_.push_back(
        std::make_unique<testing::FakeEdge>(cloud_.fleet_channel, node, active, epoch));
    v1::CloudMessage ack;
    EXPECT_TRUE(edges_.back()->Next(&ack));
    EXPECT_TRUE(ack.has_hello_ack());
    return edges_.back().get();
  }

  void SetPolicy(const std::function<void(v1::RetrainPolicy*)>& fill) {
    v1::SetRetrainPolicyRequest req;
    req.set_model("m");
    v1::RetrainPolicy* p = req.mutable_policy();
    p->set_enabled(true);
    p->set_cooldown_ms(1);
    p->mutable_job()->set_rounds(1);
    p->mutable_job()->set_min_clients(static_cast<int>(edges_.size()));
    p->mutable_job()->set_clients_per_round(static_cast<int>(edges_.size()));
    fill(p);
    v1::RetrainPolicy out;
    auto ctx = testing::Context();
    grpc::Status st = cloud_.admin->SetRetrainPolicy(ctx.get(), req, &out);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }

  std::vector<v1::Job> Jobs() { return testing::ListJobs(cloud_.admin.get()); }

  // No job within a second (five retrainer ticks).
  bool StaysQuiet(size_t jobs) {
    absl::SleepFor(absl::Seconds(1));
    return Jobs().size() == jobs;
  }

  void SendSamplesTotal(testing::FakeEdge* edge, uint64_t id, double total) {
    v1::EdgeMessage m;
    m.set_message_id(id);
    (*m.mutable_metrics()->mutable_values())["samples_total"] = total;
    ASSERT_TRUE(edge->Send(m));
  }

  // Every edge answers its task with a zero update, so the job registers a version.
  void FinishJob(const std::string& job_id) {
    for (auto& e : edges_) {
      auto task = e->NextTask();
      ASSERT_TRUE(task.ok()) << task.status();
      const size_t n = static_cast<size_t>(Schema::FromProto(base_.schema()).NumElements());
      ASSERT_TRUE(
          testing::SendUpdate(e->stub(), e->node_id(), *task, std::vector<float>(n, 0.0f), 100)
              .ok());
    }
    auto job = testing::WaitForJob(cloud_.admin.get(), job_id, absl::Seconds(30));
    ASSERT_TRUE(job.ok()) << job.status();
    ASSERT_EQ(job->state(), v1::JOB_SUCCEEDED) << job->error();
  }

  testing::TempDir dir_;
  testing::TestCloud cloud_;
  v1::Version base_;
  std::vector<std::unique_ptr<testing::FakeEdge>> edges_;
};

TEST_F(RetrainTriggersTest, NewSamplesFleetWideSinceTheLatestVersionStartAJob) {
  testing::FakeEdge* a = Connect("gw-a", "ea");
  testing::FakeEdge* b = Connect("gw-b", "eb");
  // Samples taken before the policy existed do not count.
  SendSamplesTotal(a, 1, 1000);
  SendSamplesTotal(b, 1, 500);
  absl::SleepFor(absl::Milliseconds(300));  // both are recorded
  SetPolicy([](v1::RetrainPolicy* p) { p->set_min_new_samples(100); });
  EXPECT_TRUE(StaysQuiet(0));
  SendSamplesTotal(a, 2, 1060);  // +60
  EXPECT_TRUE(StaysQuiet(0));
  SendSamplesTotal(b, 1, 9999);  // a resent message is a duplicate and changes nothing
  EXPECT_TRUE(StaysQuiet(0));
  SendSamplesTotal(b, 2, 550);  // +50: 110 fleet-wide
  ASSERT_TRUE(testing::WaitUntil([&] { return Jobs().size() == 1; }));
  const v1::Job job = Jobs()[0];
  EXPECT_EQ(job.spec().trigger(),
            "data: 110 new labelled samples across the fleet since the latest version");
  FinishJob(job.id());

  // The new version resets the count: 50 more is not enough, 120 more is.
  SendSamplesTotal(a, 3, 1110);
  EXPECT_TRUE(StaysQuiet(1));
  SendSamplesTotal(b, 3, 620);
  ASSERT_TRUE(testing::WaitUntil([&] { return Jobs().size() == 2; }));
  EXPECT_NE(Jobs()[0].spec().trigger().find("data: 120 new"), std::string::npos)
      << Jobs()[0].spec().trigger();
}

TEST_F(RetrainTriggersTest, DriftAboutAVersionTheNodeNoLongerRunsDoesNotCount) {
  v1::VersionRef current;
  current.set_model("m");
  current.set_version(base_.version());
  current.set_sha256(base_.sha256());
  testing::FakeEdge* a = Connect("gw-a", "ea", {{"m", current}});
  SetPolicy([](v1::RetrainPolicy* p) { p->set_drift_quorum_nodes(1); });
  v1::EdgeMessage stale;
  stale.set_message_id(1);
  stale.mutable_drift()->set_model("m");
  stale.mutable_drift()->mutable_version()->set_model("m");
  stale.mutable_drift()->mutable_version()->set_version(0);
  stale.mutable_drift()->mutable_version()->set_sha256(std::string(64, 'a'));
  stale.mutable_drift()->add_drifted_features("f0");
  ASSERT_TRUE(a->Send(stale));
  EXPECT_TRUE(StaysQuiet(0));
  v1::EdgeMessage fresh = stale;
  fresh.set_message_id(2);
  *fresh.mutable_drift()->mutable_version() = current;
  ASSERT_TRUE(a->Send(fresh));
  ASSERT_TRUE(testing::WaitUntil([&] { return Jobs().size() == 1; }));
  EXPECT_NE(Jobs()[0].spec().trigger().find("drift quorum: gw-a"), std::string::npos);

  // Both reports are events; only the second counted.
  const auto events = testing::ListEvents(cloud_.admin.get(), {"drift.detected"});
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].attributes().at("counted"), "false");
  EXPECT_EQ(events[1].attributes().at("counted"), "true");
}

}  // namespace
}  // namespace fedge
