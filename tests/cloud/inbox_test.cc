#include "cloud/inbox/inbox.h"

#include <map>

#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fixtures.h"

namespace fedge::cloud::inbox {
namespace {

using Result = Inbox::Result;

v1::EdgeMessage Drift(uint64_t id, const std::string& model = "m") {
  v1::EdgeMessage m;
  m.set_message_id(id);
  m.mutable_drift()->set_model(model);
  m.mutable_drift()->set_window_index(static_cast<int64_t>(id));
  return m;
}

// Rows of the report log per (node, message id), read with SQLite directly.
std::map<std::pair<std::string, int64_t>, int> ReportCounts(const std::string& dir) {
  std::map<std::pair<std::string, int64_t>, int> counts;
  for (const auto& row :
       testing::QueryFile(dir + "/inbox.db", "SELECT node_id, message_id FROM reports")) {
    ++counts[{row[0], std::stoll(row[1])}];
  }
  return counts;
}

class InboxTest : public ::testing::Test {
 protected:
  std::unique_ptr<Inbox> Open() {
    Inbox::Options o;
    o.data_dir = dir_.path();
    o.clock = &clock_;
    auto inbox = Inbox::Open(o);
    EXPECT_TRUE(inbox.ok()) << inbox.status();
    return inbox.ok() ? std::move(*inbox) : nullptr;
  }
  testing::TempDir dir_;
  testing::FakeClock clock_;
};

TEST_F(InboxTest, AppliesEachIdOnceAcrossReplaysAndRestarts) {
  {
    auto inbox = Open();
    for (uint64_t id = 1; id <= 5; ++id) {
      EXPECT_EQ(*inbox->Apply("n1", "e1", Drift(id)), Result::kApplied);
    }
    // The edge resends 3..7 (its acks were lost): 3..5 are duplicates, 6..7 new.
    for (uint64_t id = 3; id <= 7; ++id) {
      EXPECT_EQ(*inbox->Apply("n1", "e1", Drift(id)),
                id <= 5 ? Result::kDuplicate : Result::kApplied);
    }
    EXPECT_EQ(*inbox->Applied("n1", "e1"), 7u);
  }
  auto inbox = Open();  // a restarted coordinator keeps the high-water mark
  EXPECT_EQ(*inbox->Applied("n1", "e1"), 7u);
  EXPECT_EQ(*inbox->Apply("n1", "e1", Drift(7)), Result::kDuplicate);
  EXPECT_EQ(*inbox->Apply("n1", "e1", Drift(8)), Result::kApplied);
  auto counts = ReportCounts(dir_.path());
  ASSERT_EQ(counts.size(), 8u);
  for (int64_t id = 1; id <= 8; ++id) EXPECT_EQ((counts[{"n1", id}]), 1) << id;
}

TEST_F(InboxTest, NodesAndEpochsHaveTheirOwnMarks) {
  auto inbox = Open();
  EXPECT_EQ(*inbox->Apply("n1", "e1", Drift(1)), Result::kApplied);
  EXPECT_EQ(*inbox->Apply("n1", "e1", Drift(2)), Result::kApplied);
  EXPECT_EQ(*inbox->Apply("n2", "x", Drift(1)), Result::kApplied) << "another node";
  EXPECT_EQ(*inbox->Applied("n1", "e1"), 2u);
  // n1's state was wiped: a new epoch counts from 1 again and is not taken for a replay.
  EXPECT_EQ(*inbox->Applied("n1", "e2"), 0u);
  EXPECT_EQ(*inbox->Apply("n1", "e2", Drift(1)), Result::kApplied);
  EXPECT_EQ(*inbox->Applied("n1", "e2"), 1u);
  EXPECT_EQ(*inbox->Applied("n1", "e1"), 0u) << "only the newest epoch is tracked";
}

TEST_F(InboxTest, AGapMovesTheMarkPastDroppedMessages) {
  auto inbox = Open();
  EXPECT_EQ(*inbox->Apply("n1", "e1", Drift(1)), Result::kApplied);
  EXPECT_EQ(*inbox->Apply("n1", "e1", Drift(10)), Result::kApplied);  // 2..9 dropped at the edge
  EXPECT_EQ(*inbox->Applied("n1", "e1"), 10u);
  EXPECT_EQ(*inbox->Apply("n1", "e1", Drift(5)), Result::kDuplicate);
}

TEST_F(InboxTest, KeepsTheLatestMetricPerNode) {
  auto inbox = Open();
  v1::EdgeMessage m;
  m.set_message_id(1);
  (*m.mutable_metrics()->mutable_values())["samples_total"] = 100;
  ASSERT_TRUE(inbox->Apply("n1", "e", m).ok());
  m.set_message_id(2);
  (*m.mutable_metrics()->mutable_values())["samples_total"] = 250;
  ASSERT_TRUE(inbox->Apply("n1", "e", m).ok());
  ASSERT_TRUE(inbox->Apply("n1", "e", m).ok());  // a duplicate changes nothing
  m.set_message_id(1);
  (*m.mutable_metrics()->mutable_values())["samples_total"] = 7;
  ASSERT_TRUE(inbox->Apply("n2", "f", m).ok());
  auto latest = inbox->LatestMetric("samples_total");
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(*latest, (std::map<std::string, double>{{"n1", 250}, {"n2", 7}}));
}

TEST_F(InboxTest, RefusesMessagesWithoutIdOrEpoch) {
  auto inbox = Open();
  EXPECT_EQ(inbox->Apply("n1", "e", Drift(0)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(inbox->Apply("n1", "", Drift(1)).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::cloud::inbox
