#include "edge/samples/sample_store.h"

#include <cmath>
#include <limits>
#include <map>
#include <thread>

#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fixtures.h"

namespace fedge::edge::samples {
namespace {

constexpr int kClasses = 4;

SampleStore::Options StoreOptions(const std::string& dir, testing::FakeClock* clock,
                                  int features = 3) {
  SampleStore::Options o;
  o.path = dir + "/samples.db";
  for (int i = 0; i < features; ++i) o.feature_names.push_back("f" + std::to_string(i));
  o.num_classes = kClasses;
  o.clock = clock;
  return o;
}

// Sample number `id`: its first feature is the id, so tests can tell rows apart.
Sample Numbered(int id, Source source = Source::kIngest, int features = 3) {
  Sample s;
  s.features.assign(static_cast<size_t>(features), 0.5f);
  s.features[0] = static_cast<float>(id);
  s.label = id % kClasses;
  s.source = source;
  return s;
}

std::vector<Sample> Range(int from, int to) {
  std::vector<Sample> out;
  for (int i = from; i < to; ++i) out.push_back(Numbered(i));
  return out;
}

// The ids (first features) of a dataset's rows, in order.
std::vector<int> Ids(const data::Dataset& d) {
  std::vector<int> ids;
  for (int64_t r = 0; r < d.size(); ++r) {
    ids.push_back(static_cast<int>(d.features[static_cast<size_t>(r * d.num_features())]));
  }
  return ids;
}

std::vector<int> Iota(int from, int to) {
  std::vector<int> out;
  for (int i = from; i < to; ++i) out.push_back(i);
  return out;
}

// Rows per source, read from the file with SQLite itself rather than through the store.
std::map<std::string, int64_t> RowsInFile(const std::string& path) {
  std::map<std::string, int64_t> out;
  for (const auto& row :
       testing::QueryFile(path, "SELECT source, COUNT(*) FROM samples GROUP BY source")) {
    out[row[0]] = std::stoll(row[1]);
  }
  return out;
}

TEST(SampleStoreTest, CountBoundEvictsOldestFirstAndCountsWhatWent) {
  testing::TempDir dir;
  testing::FakeClock clock;
  auto o = StoreOptions(dir.path(), &clock);
  o.max_samples = 5;
  auto store = SampleStore::Open(o);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Add(Range(0, 3)).ok());
  EXPECT_EQ((*store)->Dropped(), 0);
  ASSERT_TRUE((*store)->Add(Range(3, 7)).ok());
  ASSERT_TRUE((*store)->Add(Range(7, 8)).ok());
  EXPECT_EQ((*store)->Count(), 5);
  EXPECT_EQ((*store)->TotalAdded(), 8);
  EXPECT_EQ((*store)->Dropped(), 3);  // samples 0, 1 and 2
  auto all = (*store)->All();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(Ids(*all), Iota(3, 8));
  EXPECT_EQ(all->labels, (std::vector<int64_t>{3, 0, 1, 2, 3}));
  EXPECT_EQ(all->feature_names, o.feature_names);
}

TEST(SampleStoreTest, OneAddLargerThanTheBoundKeepsItsNewestSamples) {
  testing::TempDir dir;
  testing::FakeClock clock;
  auto o = StoreOptions(dir.path(), &clock);
  o.max_samples = 4;
  auto store = SampleStore::Open(o);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Add(Range(0, 10)).ok());
  EXPECT_EQ(Ids(*(*store)->All()), Iota(6, 10));
  EXPECT_EQ((*store)->Dropped(), 6);
  EXPECT_EQ((*store)->TotalAdded(), 10);
}

TEST(SampleStoreTest, AgeBoundEvictsExpiredSamplesAndCountsThem) {
  testing::TempDir dir;
  testing::FakeClock clock;
  auto o = StoreOptions(dir.path(), &clock);
  o.max_age = absl::Hours(1);
  auto store = SampleStore::Open(o);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Add(Range(0, 2)).ok());
  clock.Advance(absl::Minutes(30));
  ASSERT_TRUE((*store)->Add(Range(2, 5)).ok());
  clock.Advance(absl::Minutes(31));  // samples 0 and 1 are now 61 minutes old
  auto all = (*store)->All();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(Ids(*all), Iota(2, 5));
  EXPECT_EQ((*store)->Count(), 3);
  EXPECT_EQ((*store)->Dropped(), 2);
  clock.Advance(absl::Minutes(30));  // and the rest expire while adding
  ASSERT_TRUE((*store)->Add(Range(5, 6)).ok());
  EXPECT_EQ(Ids(*(*store)->All()), Iota(5, 6));
  EXPECT_EQ((*store)->Dropped(), 5);
  EXPECT_EQ((*store)->TotalAdded(), 6);
}

TEST(SampleStoreTest, ZeroMaxAgeKeepsSamplesForever) {
  testing::TempDir dir;
  testing::FakeClock clock;
  auto o = StoreOptions(dir.path(), &clock);
  o.max_age = absl::ZeroDuration();
  auto store = SampleStore::Open(o);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Add(Range(0, 3)).ok());
  clock.Advance(absl::Hours(24 * 365));
  EXPECT_EQ(Ids(*(*store)->All()), Iota(0, 3));
  EXPECT_EQ((*store)->Dropped(), 0);
}

TEST(SampleStoreTest, SamplesAndCountersSurviveAReopen) {
  testing::TempDir dir;
  testing::FakeClock clock;
  auto o = StoreOptions(dir.path(), &clock);
  o.max_samples = 6;
  {
    auto store = SampleStore::Open(o);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Add(Range(0, 5)).ok());
    ASSERT_TRUE((*store)
                    ->Add({Numbered(5, Source::kFeedback), Numbered(6, Source::kFeedback),
                           Numbered(7, Source::kFeedback)})
                    .ok());
    EXPECT_EQ((*store)->Dropped(), 2);
  }
  // What the file holds, read without the store: samples 2..4 from ingest, 5..7 from feedback.
  EXPECT_EQ(RowsInFile(o.path), (std::map<std::string, int64_t>{{"feedback", 3}, {"ingest", 3}}));
  auto store = SampleStore::Open(o);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Count(), 6);
  EXPECT_EQ((*store)->TotalAdded(), 8);
  EXPECT_EQ((*store)->Dropped(), 2);
  auto all = (*store)->All();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(Ids(*all), Iota(2, 8));
  for (int64_t r = 0; r < all->size(); ++r) {  // the other features came back bit for bit
    EXPECT_EQ(all->features[static_cast<size_t>(r * 3 + 1)], 0.5f);
  }
}

TEST(SampleStoreTest, TotalAddedNeverRunsBackwardsAcrossRestarts) {
  testing::TempDir dir;
  testing::FakeClock clock;
  auto o = StoreOptions(dir.path(), &clock);
  int64_t last = 0;
  for (int restart = 0; restart < 3; ++restart) {
    o.max_samples = 10 - 3 * restart;  // shrinking the bound evicts at open, never un-adds
    auto store = SampleStore::Open(o);
    ASSERT_TRUE(store.ok());
    EXPECT_EQ((*store)->TotalAdded(), last);
    EXPECT_LE((*store)->Count(), o.max_samples);
    ASSERT_TRUE((*store)->Add(Range(0, 4)).ok());
    EXPECT_EQ((*store)->TotalAdded(), last + 4);
    EXPECT_EQ((*store)->TotalAdded(), (*store)->Count() + (*store)->Dropped());
    last = (*store)->TotalAdded();
  }
  EXPECT_EQ(last, 12);
}

TEST(SampleStoreTest, AnotherFeatureCountIsRefusedNamingBothCounts) {
  testing::TempDir dir;
  testing::FakeClock clock;
  {
    auto store = SampleStore::Open(StoreOptions(dir.path(), &clock, 3));
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Add(Range(0, 2)).ok());
  }
  auto wider = SampleStore::Open(StoreOptions(dir.path(), &clock, 5));
  ASSERT_EQ(wider.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wider.status().message().find("3 features"), std::string::npos)
      << wider.status().message();
  EXPECT_NE(wider.status().message().find("5 features"), std::string::npos)
      << wider.status().message();
  // The refused open changed nothing.
  auto same = SampleStore::Open(StoreOptions(dir.path(), &clock, 3));
  ASSERT_TRUE(same.ok());
  EXPECT_EQ((*same)->Count(), 2);
}

TEST(SampleStoreTest, BadSamplesAreRefusedNamingTheirIndexAndNothingIsStored) {
  testing::TempDir dir;
  testing::FakeClock clock;
  auto store = SampleStore::Open(StoreOptions(dir.path(), &clock));
  ASSERT_TRUE(store.ok());
  struct Case {
    std::string name;
    Sample bad;
    std::string expect;
  };
  Sample narrow = Numbered(1, Source::kIngest, 2);
  Sample high = Numbered(1);
  high.label = kClasses;
  Sample negative = Numbered(1);
  negative.label = -1;
  Sample nan = Numbered(1);
  nan.features[2] = std::numeric_limits<float>::quiet_NaN();
  Sample inf = Numbered(1);
  inf.features[1] = std::numeric_limits<float>::infinity();
  for (const Case& c :
       {Case{"narrow", narrow, "has 2 features; the store takes 3"}, Case{"high", high, "label 4"},
        Case{"negative", negative, "label -1"}, Case{"nan", nan, "feature 2 (f2) is not finite"},
        Case{"inf", inf, "feature 1 (f1) is not finite"}}) {
    std::vector<Sample> batch = Range(0, 2);
    batch.push_back(c.bad);
    absl::Status st = (*store)->Add(batch);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(st.message().find("sample 2"), std::string::npos) << c.name << ": " << st;
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << c.name << ": " << st;
  }
  EXPECT_EQ((*store)->Count(), 0);
  EXPECT_EQ((*store)->TotalAdded(), 0);
  EXPECT_TRUE(RowsInFile(dir.path() + "/samples.db").empty());
}

TEST(SampleStoreTest, RecentGivesTheNewestRowsOldestFirst) {
  testing::TempDir dir;
  testing::FakeClock clock;
  auto store = SampleStore::Open(StoreOptions(dir.path(), &clock));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Add(Range(0, 10)).ok());
  auto recent = (*store)->Recent(4);
  ASSERT_TRUE(recent.ok());
  EXPECT_EQ(Ids(*recent), Iota(6, 10));
  EXPECT_EQ(recent->labels, (std::vector<int64_t>{2, 3, 0, 1}));
  EXPECT_EQ(Ids(*(*store)->Recent(50)), Iota(0, 10));
  EXPECT_EQ((*store)->Recent(0)->size(), 0);
}

TEST(SampleStoreTest, ConcurrentAddsAreAllCounted) {
  testing::TempDir dir;
  testing::FakeClock clock;
  auto store = SampleStore::Open(StoreOptions(dir.path(), &clock));
  ASSERT_TRUE(store.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i)
        EXPECT_TRUE((*store)->Add(Range(t * 100 + i, t * 100 + i + 1)).ok());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ((*store)->Count(), 100);
  EXPECT_EQ((*store)->TotalAdded(), 100);
  EXPECT_EQ(RowsInFile(dir.path() + "/samples.db").at("ingest"), 100);
}

}  // namespace
}  // namespace fedge::edge::samples
