#include "edge/serving/recent_inputs.h"

#include "gtest/gtest.h"

namespace fedge::edge::serving {
namespace {

std::vector<float> Row(float first, size_t width = 4) {
  std::vector<float> row(width, 0.25f);
  row[0] = first;
  return row;
}

TEST(RecentInputsTest, TakeGivesTheRowOnceAndForgetsIt) {
  RecentInputs inputs({});
  const auto row = Row(7);
  inputs.Remember("p1", row.data(), 4);
  EXPECT_EQ(inputs.bytes(), 16u);
  auto taken = inputs.Take("p1");
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(*taken, row);
  EXPECT_FALSE(inputs.Take("p1").has_value());
  EXPECT_FALSE(inputs.Take("never").has_value());
  EXPECT_EQ(inputs.bytes(), 0u);
}

TEST(RecentInputsTest, RememberAllKeepsEachRowUnderItsId) {
  RecentInputs inputs({});
  std::vector<float> rows;
  for (int i = 0; i < 3; ++i) {
    const auto row = Row(static_cast<float>(i));
    rows.insert(rows.end(), row.begin(), row.end());
  }
  const std::vector<std::string> ids = {"a", "b", "c"};
  inputs.RememberAll(ids, rows.data(), 4);
  EXPECT_EQ(inputs.rows(), 3u);
  EXPECT_EQ(inputs.bytes(), 48u);
  EXPECT_EQ(*inputs.Take("b"), Row(1));
  EXPECT_EQ(*inputs.Take("c"), Row(2));
  EXPECT_EQ(*inputs.Take("a"), Row(0));
}

TEST(RecentInputsTest, TheRowBoundForgetsTheOldestFirst) {
  RecentInputs::Options o;
  o.max_rows = 3;
  RecentInputs inputs(o);
  for (int i = 0; i < 5; ++i) {
    const auto row = Row(static_cast<float>(i));
    inputs.Remember("p" + std::to_string(i), row.data(), 4);
  }
  EXPECT_EQ(inputs.rows(), 3u);
  EXPECT_FALSE(inputs.Take("p0").has_value());
  EXPECT_FALSE(inputs.Take("p1").has_value());
  for (int i = 2; i < 5; ++i) EXPECT_EQ((*inputs.Take("p" + std::to_string(i)))[0], i);
}

TEST(RecentInputsTest, TheByteBoundHoldsForWideRows) {
  RecentInputs::Options o;
  o.max_bytes = 1000;  // 2 rows of 100 floats (400 bytes each), not 3
  RecentInputs inputs(o);
  for (int i = 0; i < 10; ++i) {
    const auto row = Row(static_cast<float>(i), 100);
    inputs.Remember("p" + std::to_string(i), row.data(), 100);
    EXPECT_LE(inputs.bytes(), 1000u);
  }
  EXPECT_EQ(inputs.rows(), 2u);
  EXPECT_TRUE(inputs.Take("p9").has_value());
  EXPECT_TRUE(inputs.Take("p8").has_value());
  const auto huge = Row(1, 1000);  // larger than the whole budget: not kept
  inputs.Remember("huge", huge.data(), 1000);
  EXPECT_FALSE(inputs.Take("huge").has_value());
}

TEST(RecentInputsTest, TakenIdsDoNotHoldTheQueueOpen) {
  RecentInputs::Options o;
  o.max_rows = 2;
  RecentInputs inputs(o);
  for (int i = 0; i < 1000; ++i) {
    const auto row = Row(static_cast<float>(i));
    const std::string id = "p" + std::to_string(i);
    inputs.Remember(id, row.data(), 4);
    ASSERT_TRUE(inputs.Take(id).has_value());
  }
  EXPECT_EQ(inputs.rows(), 0u);
  EXPECT_EQ(inputs.bytes(), 0u);
}

}  // namespace
}  // namespace fedge::edge::serving
