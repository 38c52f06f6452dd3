#include "common/limits/message_bounds.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "fedge/v1/fleet.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::limits {
namespace {

using ::testing::HasSubstr;

MessageBounds Small() {
  MessageBounds b;
  b.max_bytes = 4096;
  b.max_string = 16;
  b.max_repeated = 3;
  return b;
}

TEST(MessageBoundsTest, AMessageWithinEveryBoundPasses) {
  v1::EdgeMessage m;
  m.mutable_drift()->set_model("m");
  m.mutable_drift()->add_drifted_features("temperature");
  (*m.mutable_drift()->mutable_psi())["temperature"] = 0.3;
  EXPECT_TRUE(CheckBounds(m, Small()).ok());
}

TEST(MessageBoundsTest, ALongStringIsNamedByItsPath) {
  v1::EdgeMessage m;
  m.mutable_drift()->add_drifted_features(std::string(17, 'x'));
  absl::Status st = CheckBounds(m, Small());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("drift.drifted_features[0] is 17 bytes"));
  // The input itself is never echoed.
  EXPECT_THAT(std::string(st.message()), ::testing::Not(HasSubstr("xxxx")));
}

TEST(MessageBoundsTest, MapEntriesAndTheirKeysAreBounded) {
  v1::EdgeMessage m;
  for (int i = 0; i < 4; ++i) (*m.mutable_metrics()->mutable_values())[absl::StrCat("k", i)] = i;
  absl::Status st = CheckBounds(m, Small());
  EXPECT_THAT(std::string(st.message()), HasSubstr("metrics.values has 4 entries; at most 3"));
  v1::EdgeMessage key;
  (*key.mutable_metrics()->mutable_values())[std::string(20, 'k')] = 1;
  st = CheckBounds(key, Small());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("metrics.values.key is 20 bytes"));
}

TEST(MessageBoundsTest, TheWholeMessageIsBoundedFirst) {
  v1::UploadRequest m;
  m.mutable_chunk()->set_data(std::string(5000, 'd'));
  absl::Status st = CheckBounds(m, Small());
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(st.message()), HasSubstr("UploadRequest is 50"));
  // `bytes` fields answer to their own bound, not the string one.
  MessageBounds b = Small();
  b.max_bytes = 1 << 20;
  EXPECT_TRUE(CheckBounds(m, b).ok());
  b.max_bytes_field = 1000;
  EXPECT_THAT(std::string(CheckBounds(m, b).message()), HasSubstr("chunk.data is 5000 bytes"));
}

}  // namespace
}  // namespace fedge::limits
