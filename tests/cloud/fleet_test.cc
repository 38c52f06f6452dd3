#include "cloud/fleet/fleet.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"

namespace fedge::cloud::fleet {
namespace {

class RecordingSink : public SessionSink {
 public:
  bool Send(const v1::CloudMessage& message) override {
    if (closed) return false;
    sent.push_back(message);
    return true;
  }
  void Close(const absl::Status& status) override {
    closed = true;
    close_status = status;
  }
  std::vector<v1::CloudMessage> sent;
  bool closed = false;
  absl::Status close_status;
};

v1::Hello HelloFrom(const std::string& id, std::map<std::string, std::string> labels = {},
                    std::vector<std::string> caps = {"train", "predict"}) {
  v1::Hello h;
  h.set_node_id(id);
  for (const auto& [k, v] : labels) (*h.mutable_labels())[k] = v;
  for (const auto& c : caps) h.add_capabilities(c);
  return h;
}

class FleetTest : public ::testing::Test {
 protected:
  testing::FakeClock clock_;
  Fleet fleet_{Fleet::Options{&clock_, absl::Seconds(10), absl::Seconds(2), nullptr}};
};

TEST_F(FleetTest, NodeIsAliveUntilItsHeartbeatsStop) {
  auto sink = std::make_shared<RecordingSink>();
  fleet_.Connect(HelloFrom("a"), "peer", sink);
  EXPECT_EQ(fleet_.Eligible({}, "train"), std::vector<std::string>{"a"});
  clock_.Advance(absl::Seconds(8));
  fleet_.Heartbeat("a", {});
  clock_.Advance(absl::Seconds(8));
  EXPECT_EQ(fleet_.Eligible({}, "train").size(), 1u);  // 8 s since the last heartbeat
  clock_.Advance(absl::Seconds(3));
  EXPECT_TRUE(fleet_.Eligible({}, "train").empty());  // 11 s: past the 10 s timeout
  EXPECT_TRUE(fleet_.IsConnected("a"));               // still connected, just not alive
  auto nodes = fleet_.List();
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_TRUE(nodes[0].connected());
  EXPECT_FALSE(nodes[0].alive());
}

TEST_F(FleetTest, SelectorAndCapabilityFilterNodes) {
  fleet_.Connect(HelloFrom("a", {{"site", "x"}}), "", std::make_shared<RecordingSink>());
  fleet_.Connect(HelloFrom("b", {{"site", "y"}}), "", std::make_shared<RecordingSink>());
  fleet_.Connect(HelloFrom("c", {{"site", "x"}}, {"predict"}), "",
                 std::make_shared<RecordingSink>());
  EXPECT_EQ(fleet_.Eligible({{"site", "x"}}, "train"), std::vector<std::string>{"a"});
  EXPECT_EQ(fleet_.Eligible({{"site", "x"}}, "predict"), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(fleet_.Eligible({}, ""), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(fleet_.Eligible({{"zone", "x"}}, "").empty());
}

TEST_F(FleetTest, NewestSessionWinsAndOldDisconnectIsIgnored) {
  auto first = std::make_shared<RecordingSink>();
  auto second = std::make_shared<RecordingSink>();
  uint64_t s1 = fleet_.Connect(HelloFrom("a"), "", first);
  uint64_t s2 = fleet_.Connect(HelloFrom("a"), "", second);
  EXPECT_NE(s1, s2);
  EXPECT_TRUE(first->closed);
  EXPECT_EQ(first->close_status.code(), absl::StatusCode::kAborted);
  fleet_.Disconnect("a", s1);  // the old session's end must not disconnect the new one
  EXPECT_TRUE(fleet_.IsConnected("a"));
  v1::CloudMessage msg;
  msg.mutable_train_task()->set_task_id("t");
  EXPECT_TRUE(fleet_.Send("a", msg));
  EXPECT_EQ(second->sent.size(), 1u);
  fleet_.Disconnect("a", s2);
  EXPECT_FALSE(fleet_.IsConnected("a"));
  EXPECT_FALSE(fleet_.Send("a", msg));
}

TEST_F(FleetTest, CloseAllEndsEverySessionWithTheGivenStatus) {
  auto a = std::make_shared<RecordingSink>();
  auto b = std::make_shared<RecordingSink>();
  fleet_.Connect(HelloFrom("a"), "", a);
  fleet_.Connect(HelloFrom("b"), "", b);
  fleet_.CloseAll(absl::UnavailableError("bye"));
  EXPECT_EQ(a->close_status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(b->close_status.code(), absl::StatusCode::kUnavailable);
}

TEST_F(FleetTest, DeployReportsUpdateActiveVersions) {
  fleet_.Connect(HelloFrom("a"), "", std::make_shared<RecordingSink>());
  v1::DeployStatus st;
  st.mutable_version()->set_model("m");
  st.mutable_version()->set_version(3);
  st.set_ok(true);
  fleet_.ReportDeploy("a", st);
  v1::VersionRef want;
  want.set_model("m");
  want.set_version(4);
  fleet_.SetDesired("a", want);
  auto nodes = fleet_.List();
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].active_versions().at("m").version(), 3);
  EXPECT_EQ(nodes[0].desired_versions().at("m").version(), 4);
  st.set_ok(false);
  st.mutable_version()->set_version(4);
  fleet_.ReportDeploy("a", st);  // a failed deploy leaves the active version alone
  EXPECT_EQ(fleet_.List()[0].active_versions().at("m").version(), 3);
}

}  // namespace
}  // namespace fedge::cloud::fleet
