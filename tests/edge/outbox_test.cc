#include "edge/outbox/outbox.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fixtures.h"

namespace fedge::edge::outbox {
namespace {

v1::EdgeMessage Status(const std::string& task_id, size_t padding = 0) {
  v1::EdgeMessage m;
  m.mutable_task_status()->set_task_id(task_id);
  m.mutable_task_status()->set_message(std::string(padding, 'x'));
  return m;
}

std::vector<std::string> TaskIds(const std::vector<v1::EdgeMessage>& messages) {
  std::vector<std::string> ids;
  for (const auto& m : messages) ids.push_back(m.task_status().task_id());
  return ids;
}

class OutboxTest : public ::testing::Test {
 protected:
  std::unique_ptr<Outbox> Open(int64_t max_messages = 1000, int64_t max_bytes = 1 << 20,
                               absl::Duration max_age = absl::Hours(1)) {
    Outbox::Options o;
    o.path = dir_.path() + "/outbox.db";
    o.max_messages = max_messages;
    o.max_bytes = max_bytes;
    o.max_age = max_age;
    o.clock = &clock_;
    auto box = Outbox::Open(o);
    EXPECT_TRUE(box.ok()) << box.status();
    return box.ok() ? std::move(*box) : nullptr;
  }

  testing::TempDir dir_;
  testing::FakeClock clock_;
};

TEST_F(OutboxTest, DeliversInOrderWithIdsAndQueueTimes) {
  auto box = Open();
  for (int i = 1; i <= 5; ++i) {
    auto id = box->Push(Status(absl::StrCat("t", i)));
    ASSERT_TRUE(id.ok()) << id.status();
    EXPECT_EQ(*id, static_cast<uint64_t>(i));
    clock_.Advance(absl::Seconds(1));
  }
  auto all = box->After(0, 100);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(TaskIds(*all), (std::vector<std::string>{"t1", "t2", "t3", "t4", "t5"}));
  for (size_t i = 0; i < all->size(); ++i) {
    EXPECT_EQ((*all)[i].message_id(), i + 1);
    EXPECT_EQ((*all)[i].queued_unix_ms(), absl::ToUnixMillis(absl::FromUnixSeconds(1700000000) +
                                                             absl::Seconds(static_cast<int>(i))));
  }
  auto tail = box->After(3, 100);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(TaskIds(*tail), (std::vector<std::string>{"t4", "t5"}));
  auto limited = box->After(0, 2);
  ASSERT_TRUE(limited.ok());
  EXPECT_EQ(TaskIds(*limited), (std::vector<std::string>{"t1", "t2"}));
}

TEST_F(OutboxTest, AckDeletesAndIdsNeverRepeatAcrossRestarts) {
  std::string epoch;
  {
    auto box = Open();
    epoch = box->epoch();
    EXPECT_EQ(epoch.size(), 16u);
    for (int i = 1; i <= 4; ++i) ASSERT_TRUE(box->Push(Status(absl::StrCat("t", i))).ok());
    ASSERT_TRUE(box->Ack(4).ok());  // everything applied: the table is empty
    EXPECT_EQ(box->stats().messages, 0);
    EXPECT_EQ(box->stats().bytes, 0);
    ASSERT_TRUE(box->Push(Status("t5")).ok());
    ASSERT_TRUE(box->Push(Status("t6")).ok());
    ASSERT_TRUE(box->Ack(5).ok());
  }
  auto box = Open();
  EXPECT_EQ(box->epoch(), epoch) << "the epoch is kept with the file";
  EXPECT_EQ(box->stats().last_id, 6u);
  auto left = box->After(0, 100);
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].message_id(), 6u);
  EXPECT_EQ((*left)[0].task_status().task_id(), "t6");
  auto id = box->Push(Status("t7"));
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, 7u) << "ids continue after a restart even when all were deleted";
}

TEST_F(OutboxTest, ANewFileIsANewEpoch) {
  std::string first = Open()->epoch();
  testing::TempDir other;
  Outbox::Options o;
  o.path = other.path() + "/outbox.db";
  auto second = Outbox::Open(o);
  ASSERT_TRUE(second.ok());
  EXPECT_NE((*second)->epoch(), first);
}

// A long outage: far more messages than the bound. The newest stay, the oldest go, and the
// drop counter (persisted) equals what was dropped.
TEST_F(OutboxTest, CountBoundHoldsUnderALongOutageAndCountsDrops) {
  constexpr int kBound = 200;
  constexpr int kPushed = 5000;
  {
    auto box = Open(kBound);
    for (int i = 1; i <= kPushed; ++i) {
      ASSERT_TRUE(box->Push(Status(absl::StrCat("t", i))).ok());
      ASSERT_LE(box->stats().messages, kBound);
      clock_.Advance(absl::Milliseconds(100));
    }
  }
  auto box = Open(kBound);
  const Outbox::Stats s = box->stats();
  EXPECT_EQ(s.messages, kBound);
  EXPECT_EQ(s.dropped_count, kPushed - kBound);
  EXPECT_EQ(s.dropped_bytes + s.dropped_age, 0);
  auto kept = box->After(0, kPushed);
  ASSERT_TRUE(kept.ok());
  ASSERT_EQ(kept->size(), static_cast<size_t>(kBound));
  for (int i = 0; i < kBound; ++i) {
    EXPECT_EQ((*kept)[i].message_id(), static_cast<uint64_t>(kPushed - kBound + 1 + i));
  }
}

TEST_F(OutboxTest, ByteBoundDropsOldestAndCountsThem) {
  Outbox::Stats s;
  int64_t one = 0;
  {
    auto box = Open(1000000, 1 << 20);
    ASSERT_TRUE(box->Push(Status("probe", 1000)).ok());
    one = box->stats().bytes;
    ASSERT_TRUE(box->Ack(1).ok());
  }
  const int64_t bound = one * 10 + one / 2;  // room for 10 messages
  auto box = Open(1000000, bound);
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(
        box->Push(Status("t" + std::string(4, static_cast<char>('a' + i % 26)), 1000)).ok());
    ASSERT_LE(box->stats().bytes, bound);
  }
  s = box->stats();
  EXPECT_EQ(s.messages, 10);
  EXPECT_EQ(s.dropped_bytes, 90);
  // One message bigger than the whole bound is refused, not allowed to empty the outbox.
  auto huge = box->Push(Status("huge", static_cast<size_t>(bound)));
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(box->stats().messages, 10);
}

TEST_F(OutboxTest, AgeBoundDropsExpiredMessagesAndCountsThem) {
  auto box = Open(1000, 1 << 20, absl::Minutes(10));
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(box->Push(Status(absl::StrCat("t", i))).ok());
    clock_.Advance(absl::Minutes(1));
  }
  // Now t0..t19 are older than 10 minutes (t20 was queued exactly 10 minutes ago).
  auto left = box->After(0, 1000);
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->size(), 10u);
  EXPECT_EQ(left->front().task_status().task_id(), "t20");
  EXPECT_EQ(box->stats().dropped_age, 20);
  EXPECT_EQ(box->stats().messages, 10);
  clock_.Advance(absl::Hours(1));
  left = box->After(0, 1000);
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty());
  EXPECT_EQ(box->stats().dropped_age, 30);
}

TEST_F(OutboxTest, ShrunkBoundsApplyOnOpen) {
  {
    auto box = Open(100);
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(box->Push(Status(absl::StrCat("t", i))).ok());
  }
  auto box = Open(20);
  EXPECT_EQ(box->stats().messages, 20);
  EXPECT_EQ(box->stats().dropped_count, 30);
}

TEST_F(OutboxTest, RefusesNonPositiveBounds) {
  Outbox::Options o;
  o.path = dir_.path() + "/outbox.db";
  o.max_messages = 0;
  EXPECT_EQ(Outbox::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::edge::outbox
