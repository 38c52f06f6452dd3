#include "cloud/registry/registry.h"

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/tensor/sha256.h"
#include "common/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::cloud::registry {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

class FakeClock : public Clock {
 public:
  absl::Time Now() const override { return now_; }
  void Set(absl::Time t) { now_ = t; }

 private:
  absl::Time now_ = absl::FromUnixMillis(1700000000000);
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Runs one SQL statement on a raw SQLite file, returning the first column of the first row.
std::string RawSql(const std::string& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  std::string result;
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(stmt, 0);
    if (text != nullptr) result = reinterpret_cast<const char*>(text);
  } else {
    EXPECT_EQ(rc, SQLITE_DONE) << sqlite3_errmsg(db);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return result;
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = absl::StrCat(::testing::TempDir(), "/registry_test_", info->name(), "_", ::getpid(), "_",
                        counter++);
    fs::remove_all(dir_);
  }
  void TearDown() override {
    registry_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  absl::StatusOr<std::unique_ptr<Registry>> OpenRegistry() {
    Registry::Options options;
    options.data_dir = dir_;
    options.clock = &clock_;
    return Registry::Open(options);
  }
  Registry& Reg() {
    if (registry_ == nullptr) {
      auto opened = OpenRegistry();
      EXPECT_TRUE(opened.ok()) << opened.status();
      if (opened.ok()) registry_ = std::move(opened).value();
    }
    return *registry_;
  }
  void Restart() {
    registry_.reset();
    Reg();
  }
  std::string DbPath() const { return dir_ + "/registry.db"; }

  // Stores `content` and returns a version of `model` pointing at it.
  v1::Version NewVersion(const std::string& model, const std::string& content, int64_t parent = 0) {
    auto sha = Reg().PutBlob(content);
    EXPECT_TRUE(sha.ok()) << sha.status();
    v1::Version v;
    v.set_model(model);
    v.set_sha256(sha.ok() ? *sha : "");
    v.set_parent_version(parent);
    v.set_creator("alice");
    v.set_reason("test");
    return v;
  }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Registry> registry_;
};

// --- Blobs -------------------------------------------------------------------------------

TEST_F(RegistryTest, BlobRoundTrip) {
  const std::string small = "hello, fedge";
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 + 7);

  for (const std::string& bytes : {small, big, std::string()}) {
    auto sha = Reg().PutBlob(bytes);
    ASSERT_TRUE(sha.ok()) << sha.status();
    EXPECT_EQ(*sha, Sha256Hex(bytes));
    EXPECT_TRUE(Reg().HasBlob(*sha));
    EXPECT_EQ(Reg().BlobPath(*sha), absl::StrCat(dir_, "/blobs/", sha->substr(0, 2), "/", *sha));
    EXPECT_EQ(ReadAll(Reg().BlobPath(*sha)), bytes);
    auto read = Reg().ReadBlob(*sha);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(*read, bytes);
  }
  // Nothing is left in the temporary directory.
  EXPECT_TRUE(fs::is_empty(dir_ + "/tmp"));
  EXPECT_TRUE(fs::is_directory(Reg().StagingDir()));
  EXPECT_EQ(Reg().StagingDir(), dir_ + "/staging");
}

TEST_F(RegistryTest, PutBlobIsIdempotent) {
  auto first = Reg().PutBlob("same bytes");
  auto second = Reg().PutBlob("same bytes");
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(*first, *second);
  EXPECT_EQ(ReadAll(Reg().BlobPath(*first)), "same bytes");
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir_ + "/blobs")) {
    if (e.is_regular_file()) ++files;
  }
  EXPECT_EQ(files, 1);
  EXPECT_TRUE(fs::is_empty(dir_ + "/tmp"));
}

TEST_F(RegistryTest, UnknownAndMalformedDigests) {
  const std::string unknown = Sha256Hex("never stored");
  EXPECT_FALSE(Reg().HasBlob(unknown));
  auto read = Reg().ReadBlob(unknown);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(read.status().message(), HasSubstr(unknown));

  EXPECT_EQ(Reg().ReadBlob("../../etc/passwd").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(Reg().HasBlob("../../etc/passwd"));
  EXPECT_EQ(Reg().BlobPath("../x").find(".."), std::string::npos);
}

TEST_F(RegistryTest, AdoptBlobFile) {
  const std::string content = "a staged upload";
  const std::string staged = Reg().StagingDir() + "/upload-1";
  WriteAll(staged, content);

  // A mismatched digest is refused and the file is left alone.
  absl::Status wrong = Reg().AdoptBlobFile(staged, Sha256Hex("something else"));
  EXPECT_EQ(wrong.code(), absl::StatusCode::kDataLoss) << wrong;
  EXPECT_TRUE(fs::exists(staged));
  EXPECT_EQ(ReadAll(staged), content);
  EXPECT_FALSE(Reg().HasBlob(Sha256Hex(content)));
  EXPECT_FALSE(Reg().HasBlob(Sha256Hex("something else")));

  EXPECT_EQ(Reg().AdoptBlobFile(staged, "not-a-digest").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(fs::exists(staged));

  ASSERT_TRUE(Reg().AdoptBlobFile(staged, Sha256Hex(content)).ok());
  EXPECT_FALSE(fs::exists(staged));
  auto read = Reg().ReadBlob(Sha256Hex(content));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, content);

  // Adopting content that is already stored succeeds and consumes the file.
  WriteAll(staged, content);
  ASSERT_TRUE(Reg().AdoptBlobFile(staged, Sha256Hex(content)).ok());
  EXPECT_FALSE(fs::exists(staged));

  EXPECT_EQ(Reg().AdoptBlobFile(staged + "-missing", Sha256Hex(content)).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RegistryTest, CorruptedBlobIsDataLoss) {
  auto sha = Reg().PutBlob("precious weights");
  ASSERT_TRUE(sha.ok());
  WriteAll(Reg().BlobPath(*sha), "precious weightz");
  auto read = Reg().ReadBlob(*sha);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
  EXPECT_THAT(read.status().message(), HasSubstr(*sha));

  // Storing the bytes again repairs a blob whose size is wrong.
  WriteAll(Reg().BlobPath(*sha), "truncated");
  ASSERT_TRUE(Reg().PutBlob("precious weights").ok());
  EXPECT_TRUE(Reg().ReadBlob(*sha).ok());
}

// --- Models and versions -------------------------------------------------------------------

TEST_F(RegistryTest, VersionsNumberFromOneAndSurviveRestart) {
  v1::Version v1 = NewVersion("hvac", "weights-1");
  v1.set_schema_hash("schema-a");
  v1.set_job_id("job-1");
  v1.set_round(3);
  (*v1.mutable_metrics())["accuracy"] = 0.91;
  auto* p = v1.add_participants();
  p->set_node_id("edge-1");
  p->set_num_samples(500);
  v1.mutable_contract()->add_feature_names("temp");
  v1.mutable_schema()->set_hash("schema-a");

  auto a = Reg().AddVersion(v1, "HVAC anomaly model");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->version(), 1);
  EXPECT_EQ(a->size_bytes(), 9);
  EXPECT_EQ(a->created_unix_ms(), 1700000000000);

  clock_.Set(absl::FromUnixMillis(1700000001000));
  auto b = Reg().AddVersion(NewVersion("hvac", "weights-2", 1));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->version(), 2);
  EXPECT_EQ(b->created_unix_ms(), 1700000001000);

  v1::Version third = NewVersion("hvac", "weights-3", 2);
  third.set_created_unix_ms(42);
  third.set_version(77);  // Ignored: the registry numbers versions.
  auto c = Reg().AddVersion(third);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->version(), 3);
  EXPECT_EQ(c->created_unix_ms(), 42);

  // Another model numbers independently.
  auto other = Reg().AddVersion(NewVersion("pump", "pump-1"));
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->version(), 1);

  Restart();
  EXPECT_EQ(Reg().SchemaVersion(), Registry::CurrentSchemaVersion());
  auto list = Reg().ListVersions("hvac");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].version(), 1);
  EXPECT_EQ((*list)[1].version(), 2);
  EXPECT_EQ((*list)[2].version(), 3);
  EXPECT_EQ((*list)[1].parent_version(), 1);
  const v1::Version& first = (*list)[0];
  EXPECT_EQ(first.sha256(), Sha256Hex("weights-1"));
  EXPECT_EQ(first.schema_hash(), "schema-a");
  EXPECT_EQ(first.job_id(), "job-1");
  EXPECT_EQ(first.round(), 3);
  EXPECT_EQ(first.creator(), "alice");
  EXPECT_EQ(first.reason(), "test");
  EXPECT_DOUBLE_EQ(first.metrics().at("accuracy"), 0.91);
  ASSERT_EQ(first.participants_size(), 1);
  EXPECT_EQ(first.participants(0).num_samples(), 500);
  EXPECT_EQ(first.contract().feature_names(0), "temp");
  EXPECT_EQ(first.schema().hash(), "schema-a");

  auto d = Reg().AddVersion(NewVersion("hvac", "weights-4", 3));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->version(), 4);

  auto models = Reg().ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ((*models)[0].name(), "hvac");
  EXPECT_EQ((*models)[0].description(), "HVAC anomaly model");
  EXPECT_EQ((*models)[0].latest_version(), 4);
  EXPECT_EQ((*models)[0].num_versions(), 4);
  EXPECT_EQ((*models)[0].created_unix_ms(), 1700000000000);
  EXPECT_EQ((*models)[1].name(), "pump");
  EXPECT_EQ((*models)[1].latest_version(), 1);
}

TEST_F(RegistryTest, LatestVersionLookup) {
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(Reg().AddVersion(NewVersion("m", absl::StrCat("w", i))).ok());
  }
  auto latest = Reg().GetVersion("m", 0);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(latest->version(), 3);
  EXPECT_EQ(latest->sha256(), Sha256Hex("w3"));
  auto second = Reg().GetVersion("m", 2);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->sha256(), Sha256Hex("w2"));
}

TEST_F(RegistryTest, ParentMustExist) {
  auto orphan = Reg().AddVersion(NewVersion("fresh", "w", 5));
  EXPECT_EQ(orphan.status().code(), absl::StatusCode::kNotFound) << orphan.status();
  EXPECT_THAT(orphan.status().message(), HasSubstr("fresh"));
  // Nothing was created.
  auto models = Reg().ListModels();
  ASSERT_TRUE(models.ok());
  EXPECT_TRUE(models->empty());

  ASSERT_TRUE(Reg().AddVersion(NewVersion("fresh", "w")).ok());
  EXPECT_EQ(Reg().AddVersion(NewVersion("fresh", "w2", 2)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Reg().AddVersion(NewVersion("fresh", "w2", -1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto ok = Reg().AddVersion(NewVersion("fresh", "w2", 1));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->version(), 2);
}

TEST_F(RegistryTest, InvalidModelName) {
  for (const std::string& name :
       {std::string(), std::string("-lead"), std::string(".hidden"), std::string("a/b"),
        std::string("a b"), std::string("caf\xc3\xa9"), std::string(129, 'x'),
        std::string("../x")}) {
    auto r = Reg().AddVersion(NewVersion(name, "w"));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(r.status().message(), HasSubstr("[A-Za-z0-9][A-Za-z0-9._-]{0,127}"));
  }
  for (const std::string& name : {std::string("a"), std::string("Model_v2.1-final"),
                                  std::string("9lives"), std::string(128, 'x')}) {
    EXPECT_TRUE(Reg().AddVersion(NewVersion(name, "w")).ok()) << name;
  }
}

TEST_F(RegistryTest, BlobMustBePresentAndDigestWellFormed) {
  v1::Version v;
  v.set_model("m");
  v.set_sha256(Sha256Hex("not uploaded"));
  auto missing = Reg().AddVersion(v);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition) << missing.status();
  EXPECT_THAT(missing.status().message(), HasSubstr(v.sha256()));

  v.set_sha256("ABCDEF");
  EXPECT_EQ(Reg().AddVersion(v).status().code(), absl::StatusCode::kInvalidArgument);
  v.set_sha256(std::string(64, 'A'));  // Upper case is not fedge's digest form.
  EXPECT_EQ(Reg().AddVersion(v).status().code(), absl::StatusCode::kInvalidArgument);

  v1::Version sized = NewVersion("m", "12345");
  sized.set_size_bytes(4);
  EXPECT_EQ(Reg().AddVersion(sized).status().code(), absl::StatusCode::kInvalidArgument);
  sized.set_size_bytes(5);
  EXPECT_TRUE(Reg().AddVersion(sized).ok());
}

TEST_F(RegistryTest, UnknownModelOrVersionIsNotFound) {
  auto no_model = Reg().GetVersion("ghost", 1);
  EXPECT_EQ(no_model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(no_model.status().message(), HasSubstr("ghost"));
  auto no_latest = Reg().GetVersion("ghost", 0);
  EXPECT_EQ(no_latest.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(no_latest.status().message(), HasSubstr("ghost"));
  auto no_list = Reg().ListVersions("ghost");
  EXPECT_EQ(no_list.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(no_list.status().message(), HasSubstr("ghost"));

  ASSERT_TRUE(Reg().AddVersion(NewVersion("real", "w")).ok());
  auto no_version = Reg().GetVersion("real", 17);
  EXPECT_EQ(no_version.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(no_version.status().message(), HasSubstr("real"));
  EXPECT_THAT(no_version.status().message(), HasSubstr("17"));
  EXPECT_EQ(Reg().GetVersion("real", -1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RegistryTest, ConcurrentAddVersionGivesConsecutiveNumbers) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 15;
  Registry& reg = Reg();
  std::vector<std::vector<int64_t>> numbers(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto sha = reg.PutBlob(absl::StrCat("thread ", t, " item ", i));
        ASSERT_TRUE(sha.ok()) << sha.status();
        v1::Version v;
        v.set_model("shared");
        v.set_sha256(*sha);
        auto added = reg.AddVersion(v);
        ASSERT_TRUE(added.ok()) << added.status();
        numbers[t].push_back(added->version());
      }
    });
  }
  for (auto& th : threads) th.join();
  std::vector<int64_t> all;
  for (const auto& n : numbers) all.insert(all.end(), n.begin(), n.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * kPerThread));
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], static_cast<int64_t>(i + 1));
  // Each thread saw its own numbers increase.
  for (const auto& n : numbers) EXPECT_TRUE(std::is_sorted(n.begin(), n.end()));
}

TEST_F(RegistryTest, TwoConnectionsOnOneDirectoryShareNumbering) {
  // Two registries on one data_dir (two SQLite connections) still number without gaps or
  // duplicates: the write lock is taken before the latest number is read.
  auto second = OpenRegistry();
  ASSERT_TRUE(second.ok()) << second.status();
  Registry& a = Reg();
  Registry& b = **second;
  auto sha = a.PutBlob("w");
  ASSERT_TRUE(sha.ok());
  std::vector<int64_t> got_a, got_b;
  auto run = [&](Registry* reg, std::vector<int64_t>* out) {
    for (int i = 0; i < 20; ++i) {
      v1::Version v;
      v.set_model("m");
      v.set_sha256(*sha);
      auto added = reg->AddVersion(v);
      ASSERT_TRUE(added.ok()) << added.status();
      out->push_back(added->version());
    }
  };
  std::thread ta(run, &a, &got_a);
  std::thread tb(run, &b, &got_b);
  ta.join();
  tb.join();
  std::vector<int64_t> all = got_a;
  all.insert(all.end(), got_b.begin(), got_b.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), 40u);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], static_cast<int64_t>(i + 1));
}

// --- Jobs ----------------------------------------------------------------------------------

v1::Job MakeJob(const std::string& id, int64_t created, v1::JobState state) {
  v1::Job job;
  job.set_id(id);
  job.set_state(state);
  job.set_created_unix_ms(created);
  job.set_updated_unix_ms(created);
  job.mutable_spec();
  return job;
}

std::vector<std::string> Ids(const std::vector<Registry::JobRecord>& records) {
  std::vector<std::string> ids;
  for (const auto& r : records) ids.push_back(r.job.id());
  return ids;
}

TEST_F(RegistryTest, JobsPutGetListAndUnfinished) {
  const std::string g1 = Sha256Hex("g1");
  ASSERT_TRUE(Reg().PutJob(MakeJob("job-a", 100, v1::JOB_SUCCEEDED), g1).ok());
  ASSERT_TRUE(Reg().PutJob(MakeJob("job-b", 300, v1::JOB_RUNNING), g1).ok());
  ASSERT_TRUE(Reg().PutJob(MakeJob("job-c", 200, v1::JOB_PENDING), "").ok());
  ASSERT_TRUE(Reg().PutJob(MakeJob("job-d", 200, v1::JOB_FAILED), "").ok());

  auto got = Reg().GetJob("job-b");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->job.state(), v1::JOB_RUNNING);
  EXPECT_EQ(got->job.created_unix_ms(), 300);
  EXPECT_EQ(got->global_sha256, g1);

  auto missing = Reg().GetJob("job-z");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("job-z"));

  auto all = Reg().ListJobs();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(Ids(*all), ElementsAre("job-b", "job-c", "job-d", "job-a"));

  auto unfinished = Reg().UnfinishedJobs();
  ASSERT_TRUE(unfinished.ok());
  std::vector<std::string> ids = Ids(*unfinished);
  std::sort(ids.begin(), ids.end());
  EXPECT_THAT(ids, ElementsAre("job-b", "job-c"));

  // Put replaces, and the state change shows in UnfinishedJobs after a restart.
  v1::Job b = got->job;
  b.set_state(v1::JOB_FAILED);
  b.set_error("node quorum lost");
  b.set_completed_rounds(2);
  const std::string g2 = Sha256Hex("g2");
  ASSERT_TRUE(Reg().PutJob(b, g2).ok());
  Restart();
  got = Reg().GetJob("job-b");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->job.state(), v1::JOB_FAILED);
  EXPECT_EQ(got->job.error(), "node quorum lost");
  EXPECT_EQ(got->job.completed_rounds(), 2);
  EXPECT_EQ(got->global_sha256, g2);
  unfinished = Reg().UnfinishedJobs();
  ASSERT_TRUE(unfinished.ok());
  EXPECT_THAT(Ids(*unfinished), ElementsAre("job-c"));
  all = Reg().ListJobs();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 4u);

  EXPECT_EQ(Reg().PutJob(MakeJob("", 1, v1::JOB_PENDING), "").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Reg().PutJob(MakeJob("x", 1, v1::JOB_PENDING), "nope").code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(RegistryTest, FinishJobAddsVersionAndMarksJobSucceeded) {
  ASSERT_TRUE(Reg().AddVersion(NewVersion("hvac", "base")).ok());
  ASSERT_TRUE(Reg().PutJob(MakeJob("job-1", 10, v1::JOB_RUNNING), Sha256Hex("base")).ok());
  v1::Version result = NewVersion("hvac", "trained", 1);
  result.set_round(5);
  clock_.Set(absl::FromUnixMillis(1800000000000));
  auto finished = Reg().FinishJob(MakeJob("job-1", 10, v1::JOB_RUNNING), result);
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_EQ(finished->version(), 2);
  EXPECT_EQ(finished->job_id(), "job-1");

  Restart();
  auto job = Reg().GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->job.state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(job->job.result_version(), 2);
  EXPECT_EQ(job->job.updated_unix_ms(), 1800000000000);
  EXPECT_EQ(job->global_sha256, Sha256Hex("trained"));
  auto v = Reg().GetVersion("hvac", 2);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->sha256(), Sha256Hex("trained"));
  EXPECT_EQ(v->round(), 5);
  auto unfinished = Reg().UnfinishedJobs();
  ASSERT_TRUE(unfinished.ok());
  EXPECT_TRUE(unfinished->empty());
}

TEST_F(RegistryTest, FinishJobIsAtomic) {
  ASSERT_TRUE(Reg().PutJob(MakeJob("job-1", 10, v1::JOB_RUNNING), "").ok());

  // Missing blob: neither the version nor the job change happens.
  v1::Version missing;
  missing.set_model("hvac");
  missing.set_sha256(Sha256Hex("never uploaded"));
  auto r = Reg().FinishJob(MakeJob("job-1", 10, v1::JOB_RUNNING), missing);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  auto job = Reg().GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->job.state(), v1::JOB_RUNNING);
  EXPECT_EQ(job->job.result_version(), 0);
  auto models = Reg().ListModels();
  ASSERT_TRUE(models.ok());
  EXPECT_TRUE(models->empty());

  // A failure inside the transaction (unknown parent of an existing model) rolls back too.
  ASSERT_TRUE(Reg().AddVersion(NewVersion("hvac", "base")).ok());
  auto bad_parent =
      Reg().FinishJob(MakeJob("job-1", 10, v1::JOB_RUNNING), NewVersion("hvac", "trained", 9));
  EXPECT_EQ(bad_parent.status().code(), absl::StatusCode::kNotFound);
  job = Reg().GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->job.state(), v1::JOB_RUNNING);
  auto versions = Reg().ListVersions("hvac");
  ASSERT_TRUE(versions.ok());
  EXPECT_EQ(versions->size(), 1u);
}

// --- Schema ----------------------------------------------------------------------------------

TEST_F(RegistryTest, FreshDatabaseIsAtCurrentSchemaInWalMode) {
  EXPECT_EQ(Registry::CurrentSchemaVersion(), 3);
  EXPECT_EQ(Reg().SchemaVersion(), Registry::CurrentSchemaVersion());
  EXPECT_EQ(RawSql(DbPath(), "PRAGMA user_version"),
            std::to_string(Registry::CurrentSchemaVersion()));
  EXPECT_EQ(RawSql(DbPath(), "PRAGMA journal_mode"), "wal");
  EXPECT_TRUE(fs::is_directory(dir_ + "/blobs"));
  EXPECT_TRUE(fs::is_directory(dir_ + "/staging"));
}

TEST_F(RegistryTest, FutureSchemaVersionRefusesToOpen) {
  fs::create_directories(dir_);
  const int future = Registry::CurrentSchemaVersion() + 5;
  RawSql(DbPath(), "CREATE TABLE from_the_future (x)");
  RawSql(DbPath(), absl::StrCat("PRAGMA user_version = ", future));
  const std::string before = ReadAll(DbPath());
  ASSERT_FALSE(before.empty());

  auto opened = OpenRegistry();
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(opened.status().message(),
              HasSubstr(absl::StrCat("registry.db has schema version ", future,
                                     ", this fedge-cloud understands up to ",
                                     Registry::CurrentSchemaVersion(), "; upgrade fedge-cloud")));
  EXPECT_EQ(ReadAll(DbPath()), before);
  EXPECT_EQ(RawSql(DbPath(), "PRAGMA user_version"), std::to_string(future));
  EXPECT_EQ(RawSql(DbPath(), "PRAGMA journal_mode"), "delete");
}

TEST_F(RegistryTest, MigratesEmptyVersionZeroDatabase) {
  fs::create_directories(dir_);
  RawSql(DbPath(), "PRAGMA user_version = 0");
  RawSql(DbPath(), "VACUUM");
  ASSERT_EQ(RawSql(DbPath(), "PRAGMA user_version"), "0");

  auto opened = OpenRegistry();
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ((*opened)->SchemaVersion(), Registry::CurrentSchemaVersion());
  EXPECT_EQ(RawSql(DbPath(), "PRAGMA user_version"),
            std::to_string(Registry::CurrentSchemaVersion()));
  for (const char* table :
       {"models", "versions", "jobs", "desired_versions", "aliases", "audit", "deployments"}) {
    EXPECT_EQ(RawSql(DbPath(), absl::StrCat("SELECT count(*) FROM sqlite_master WHERE "
                                            "type = 'table' AND name = '",
                                            table, "'")),
              "1")
        << table;
  }
  auto sha = (*opened)->PutBlob("w");
  ASSERT_TRUE(sha.ok());
  v1::Version v;
  v.set_model("m");
  v.set_sha256(*sha);
  EXPECT_TRUE((*opened)->AddVersion(v).ok());
}

TEST_F(RegistryTest, UnusableDataDirIsAnError) {
  fs::create_directories(dir_);
  WriteAll(dir_ + "/file", "x");
  Registry::Options options;
  options.data_dir = dir_ + "/file";
  auto opened = Registry::Open(options);
  EXPECT_FALSE(opened.ok());
  options.data_dir = "";
  EXPECT_EQ(Registry::Open(options).status().code(), absl::StatusCode::kInvalidArgument);

  // A file that is not a database.
  const std::string garbage_dir = dir_ + "/garbage";
  fs::create_directories(garbage_dir);
  WriteAll(garbage_dir + "/registry.db", std::string(4096, 'G'));
  options.data_dir = garbage_dir;
  auto garbage = Registry::Open(options);
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kDataLoss) << garbage.status();
}

// --- Deployment ----------------------------------------------------------------------------

TEST_F(RegistryTest, DesiredVersionsReplacePerNodeAndModel) {
  ASSERT_TRUE(Reg().AddVersion(NewVersion("hvac", "h1")).ok());
  ASSERT_TRUE(Reg().AddVersion(NewVersion("hvac", "h2")).ok());
  ASSERT_TRUE(Reg().AddVersion(NewVersion("pump", "p1")).ok());

  auto ref = [](const std::string& model, int64_t version, const std::string& sha) {
    v1::VersionRef r;
    r.set_model(model);
    r.set_version(version);
    r.set_sha256(sha);
    return r;
  };
  ASSERT_TRUE(Reg().SetDesiredVersion("edge-1", ref("hvac", 1, Sha256Hex("h1"))).ok());
  ASSERT_TRUE(Reg().SetDesiredVersion("edge-1", ref("pump", 1, "")).ok());
  ASSERT_TRUE(Reg().SetDesiredVersion("edge-2", ref("hvac", 1, "")).ok());
  ASSERT_TRUE(Reg().SetDesiredVersion("edge-1", ref("hvac", 2, "")).ok());

  Restart();
  auto d1 = Reg().DesiredVersions("edge-1");
  ASSERT_TRUE(d1.ok()) << d1.status();
  ASSERT_EQ(d1->size(), 2u);
  EXPECT_EQ((*d1)[0].model(), "hvac");
  EXPECT_EQ((*d1)[0].version(), 2);
  EXPECT_EQ((*d1)[0].sha256(), Sha256Hex("h2"));
  EXPECT_EQ((*d1)[1].model(), "pump");
  EXPECT_EQ((*d1)[1].sha256(), Sha256Hex("p1"));
  auto d2 = Reg().DesiredVersions("edge-2");
  ASSERT_TRUE(d2.ok());
  ASSERT_EQ(d2->size(), 1u);
  EXPECT_EQ((*d2)[0].version(), 1);
  auto none = Reg().DesiredVersions("edge-3");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  EXPECT_EQ(Reg().SetDesiredVersion("edge-1", ref("hvac", 9, "")).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Reg().SetDesiredVersion("edge-1", ref("ghost", 1, "")).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Reg().SetDesiredVersion("edge-1", ref("hvac", 1, Sha256Hex("h2"))).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Reg().SetDesiredVersion("", ref("hvac", 1, "")).code(),
            absl::StatusCode::kInvalidArgument);
  // The failed calls changed nothing.
  d1 = Reg().DesiredVersions("edge-1");
  ASSERT_TRUE(d1.ok());
  EXPECT_EQ((*d1)[0].version(), 2);
}

// --- Governance (schema version 2) ---------------------------------------------------------

// Runs a script (several statements) on a raw SQLite file; returns the error text, or "".
std::string RawExec(const std::string& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  std::string error;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    error = err != nullptr ? err : "error";
  }
  sqlite3_free(err);
  sqlite3_close(db);
  return error;
}

using AliasMap = std::map<std::string, int64_t>;
using TagMap = std::map<std::string, std::string>;

std::vector<std::string> Aliases(const v1::Version& v) {
  return std::vector<std::string>(v.aliases().begin(), v.aliases().end());
}

std::vector<int64_t> VersionNumbers(const std::vector<v1::AuditEntry>& entries) {
  std::vector<int64_t> out;
  for (const auto& e : entries) out.push_back(e.version());
  return out;
}

std::vector<std::string> Actions(const std::vector<v1::AuditEntry>& entries) {
  std::vector<std::string> out;
  for (const auto& e : entries) out.push_back(e.action());
  return out;
}

class RegistryGovernanceTest : public RegistryTest {
 protected:
  // Adds versions 1..n of `model` (content "<model>-<i>"), each the parent of the next.
  void AddChain(const std::string& model, int n) {
    for (int i = 1; i <= n; ++i) {
      auto added = Reg().AddVersion(NewVersion(model, absl::StrCat(model, "-", i), i - 1));
      ASSERT_TRUE(added.ok()) << added.status();
      ASSERT_EQ(added->version(), i);
    }
  }
  Registry::Audit Who(const std::string& principal, const std::string& reason = "") {
    return Registry::Audit{principal, reason};
  }
};

TEST_F(RegistryGovernanceTest, AliasesMoveAndShowOnVersionsAndModels) {
  AddChain("hvac", 3);
  ASSERT_TRUE(Reg().SetAlias("hvac", "production", 1, Who("alice")).ok());
  auto staged = Reg().SetAlias("hvac", "staging", 1, Who("alice"));
  ASSERT_TRUE(staged.ok()) << staged.status();
  EXPECT_THAT(Aliases(*staged), ElementsAre("production", "staging"));

  auto moved = Reg().SetAlias("hvac", "production", 2, Who("alice"));
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->version(), 2);
  EXPECT_THAT(Aliases(*moved), ElementsAre("production"));

  Restart();
  auto v1 = Reg().GetVersion("hvac", 1);
  ASSERT_TRUE(v1.ok());
  EXPECT_THAT(Aliases(*v1), ElementsAre("staging"));
  auto list = Reg().ListVersions("hvac");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 3u);
  EXPECT_THAT(Aliases((*list)[0]), ElementsAre("staging"));
  EXPECT_THAT(Aliases((*list)[1]), ElementsAre("production"));
  EXPECT_THAT(Aliases((*list)[2]), IsEmpty());

  auto model = Reg().GetModel("hvac");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_THAT(AliasMap(model->aliases().begin(), model->aliases().end()),
              ElementsAre(Pair("production", 2), Pair("staging", 1)));
  auto models = Reg().ListModels();
  ASSERT_TRUE(models.ok());
  ASSERT_EQ(models->size(), 1u);
  EXPECT_EQ((*models)[0].aliases().at("production"), 2);

  auto resolved = Reg().ResolveAlias("hvac", "production");
  ASSERT_TRUE(resolved.ok());
  EXPECT_EQ(*resolved, 2);

  auto after_delete = Reg().DeleteAlias("hvac", "staging", Who("alice"));
  ASSERT_TRUE(after_delete.ok()) << after_delete.status();
  EXPECT_EQ(after_delete->aliases().count("staging"), 0u);
  auto gone = Reg().ResolveAlias("hvac", "staging");
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(gone.status().message(), HasSubstr("hvac"));
  EXPECT_THAT(gone.status().message(), HasSubstr("staging"));
  v1 = Reg().GetVersion("hvac", 1);
  ASSERT_TRUE(v1.ok());
  EXPECT_THAT(Aliases(*v1), IsEmpty());
}

TEST_F(RegistryGovernanceTest, SetAliasRejectsBadNamesUnknownVersionsAndMissingAliases) {
  AddChain("hvac", 1);
  for (const std::string& bad : {std::string(), std::string("-x"), std::string("a/b")}) {
    auto r = Reg().SetAlias("hvac", bad, 1, Who("alice"));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("invalid alias name"));
  }
  auto unknown = Reg().SetAlias("hvac", "production", 9, Who("alice"));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("9"));
  EXPECT_EQ(Reg().SetAlias("ghost", "production", 1, Who("alice")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Reg().SetAlias("hvac", "production", 0, Who("alice")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Reg().DeleteAlias("hvac", "production", Who("alice")).status().code(),
            absl::StatusCode::kNotFound);
  // Failed calls leave no audit entries.
  auto audit = Reg().ListAudit("", "", 0);
  ASSERT_TRUE(audit.ok());
  EXPECT_THAT(*audit, IsEmpty());
}

TEST_F(RegistryGovernanceTest, SetAliasAuditRecordsWhoWhenWhyAndFromVersion) {
  AddChain("hvac", 2);
  clock_.Set(absl::FromUnixMillis(1700000005000));
  ASSERT_TRUE(Reg().SetAlias("hvac", "production", 1, Who("bob", "first release"), "promote").ok());
  clock_.Set(absl::FromUnixMillis(1700000009000));
  ASSERT_TRUE(Reg().SetAlias("hvac", "production", 2, Who("", "canary healthy")).ok());

  auto audit = Reg().ListAudit("hvac", "", 0);
  ASSERT_TRUE(audit.ok()) << audit.status();
  ASSERT_EQ(audit->size(), 2u);
  const v1::AuditEntry& second = (*audit)[0];
  const v1::AuditEntry& first = (*audit)[1];
  EXPECT_EQ(first.action(), "promote");
  EXPECT_EQ(first.principal(), "bob");
  EXPECT_EQ(first.reason(), "first release");
  EXPECT_EQ(first.time_unix_ms(), 1700000005000);
  EXPECT_EQ(first.model(), "hvac");
  EXPECT_EQ(first.version(), 1);
  EXPECT_EQ(first.detail(), "alias=production from=none");
  EXPECT_EQ(second.action(), "alias");
  EXPECT_EQ(second.principal(), "anonymous");
  EXPECT_EQ(second.reason(), "canary healthy");
  EXPECT_EQ(second.time_unix_ms(), 1700000009000);
  EXPECT_EQ(second.version(), 2);
  EXPECT_EQ(second.detail(), "alias=production from=1");
  EXPECT_GT(second.id(), first.id());
}

TEST_F(RegistryGovernanceTest, RacingSetAliasCallsEndInOneConsistentState) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 25;
  AddChain("hvac", kThreads);
  // Two connections on one directory, so the database's write lock is what serializes them.
  auto second = OpenRegistry();
  ASSERT_TRUE(second.ok()) << second.status();
  std::vector<Registry*> regs = {&Reg(), second->get()};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto r = regs[t % 2]->SetAlias("hvac", "production", t + 1, Who(absl::StrCat("thread-", t)),
                                       "promote");
        ASSERT_TRUE(r.ok()) << r.status();
      }
    });
  }
  for (auto& th : threads) th.join();

  auto audit = Reg().ListAudit("hvac", "", kThreads * kPerThread + 10);
  ASSERT_TRUE(audit.ok()) << audit.status();
  ASSERT_EQ(audit->size(), static_cast<size_t>(kThreads * kPerThread));
  auto resolved = Reg().ResolveAlias("hvac", "production");
  ASSERT_TRUE(resolved.ok());
  EXPECT_EQ(*resolved, (*audit)[0].version());
  // Oldest to newest, each entry moved the alias from where the previous one left it.
  std::string expected_from = "none";
  for (auto it = audit->rbegin(); it != audit->rend(); ++it) {
    EXPECT_EQ(it->detail(), absl::StrCat("alias=production from=", expected_from));
    expected_from = absl::StrCat(it->version());
  }
  // Exactly one version carries the alias.
  auto list = Reg().ListVersions("hvac");
  ASSERT_TRUE(list.ok());
  int carriers = 0;
  for (const auto& v : *list) {
    if (!v.aliases().empty()) {
      ++carriers;
      EXPECT_EQ(v.version(), *resolved);
    }
  }
  EXPECT_EQ(carriers, 1);
}

TEST_F(RegistryGovernanceTest, TagsMergeAndEmptyValueDeletes) {
  AddChain("hvac", 1);
  auto first = Reg().SetTags("hvac", 1, {{"site", "plant-7"}, {"owner", "ops"}}, Who("alice"));
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = Reg().SetTags("hvac", 1, {{"owner", ""}, {"stage", "canary"}, {"site", "plant-8"}},
                              Who("alice", "moved"));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_THAT(TagMap(second->tags().begin(), second->tags().end()),
              ElementsAre(Pair("site", "plant-8"), Pair("stage", "canary")));

  Restart();
  auto v = Reg().GetVersion("hvac", 1);
  ASSERT_TRUE(v.ok());
  EXPECT_THAT(TagMap(v->tags().begin(), v->tags().end()),
              ElementsAre(Pair("site", "plant-8"), Pair("stage", "canary")));
  auto audit = Reg().ListAudit("hvac", "", 1);
  ASSERT_TRUE(audit.ok());
  ASSERT_EQ(audit->size(), 1u);
  EXPECT_EQ((*audit)[0].action(), "tags");
  EXPECT_EQ((*audit)[0].detail(), "-owner site=plant-8 stage=canary");
  EXPECT_EQ(Reg().SetTags("hvac", 1, {{"", "x"}}, Who("alice")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Reg().SetTags("hvac", 5, {{"a", "x"}}, Who("alice")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RegistryGovernanceTest, ValidationIsStoredOnTheVersion) {
  AddChain("hvac", 2);
  v1::Validation failed;
  failed.set_passed(false);
  failed.set_accuracy(0.61);
  failed.set_loss(0.9);
  failed.set_samples(400);
  failed.set_reason("accuracy 0.61 < minimum 0.80");
  failed.set_production_version(1);
  failed.set_source("synthetic");
  clock_.Set(absl::FromUnixMillis(1700000123000));
  auto stored = Reg().SetValidation("hvac", 2, failed, Who("gatekeeper"));
  ASSERT_TRUE(stored.ok()) << stored.status();

  Restart();
  auto v = Reg().GetVersion("hvac", 2);
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(v->has_validation());
  EXPECT_FALSE(v->validation().passed());
  EXPECT_DOUBLE_EQ(v->validation().accuracy(), 0.61);
  EXPECT_EQ(v->validation().samples(), 400);
  EXPECT_EQ(v->validation().reason(), "accuracy 0.61 < minimum 0.80");
  EXPECT_EQ(v->validation().production_version(), 1);
  EXPECT_EQ(v->validation().source(), "synthetic");
  EXPECT_EQ(v->validation().validated_unix_ms(), 1700000123000);
  EXPECT_EQ(v->validation().principal(), "gatekeeper");
  auto other = Reg().GetVersion("hvac", 1);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_validation());

  auto audit = Reg().ListAudit("hvac", "", 0);
  ASSERT_TRUE(audit.ok());
  ASSERT_EQ(audit->size(), 1u);
  EXPECT_EQ((*audit)[0].action(), "validate");
  EXPECT_EQ((*audit)[0].version(), 2);
  EXPECT_EQ((*audit)[0].detail(), "failed: accuracy 0.61 < minimum 0.80");
}

TEST_F(RegistryGovernanceTest, LineageFollowsParentsAndNamesTheJob) {
  ASSERT_TRUE(Reg().AddVersion(NewVersion("hvac", "gen-1")).ok());
  v1::Job job = MakeJob("job-7", 50, v1::JOB_RUNNING);
  job.set_completed_rounds(3);
  job.add_rounds()->set_round(1);
  ASSERT_TRUE(Reg().PutJob(job, Sha256Hex("gen-1")).ok());
  ASSERT_TRUE(Reg().FinishJob(job, NewVersion("hvac", "gen-2", 1)).ok());
  v1::Version third = NewVersion("hvac", "gen-3", 2);
  third.set_job_id("job-7");
  ASSERT_TRUE(Reg().AddVersion(third).ok());

  auto lineage = Reg().GetLineage("hvac", 3);
  ASSERT_TRUE(lineage.ok()) << lineage.status();
  EXPECT_EQ(lineage->version().version(), 3);
  ASSERT_EQ(lineage->ancestors_size(), 2);
  EXPECT_EQ(lineage->ancestors(0).version(), 2);
  EXPECT_EQ(lineage->ancestors(0).sha256(), Sha256Hex("gen-2"));
  EXPECT_EQ(lineage->ancestors(1).version(), 1);
  EXPECT_EQ(lineage->job().id(), "job-7");
  EXPECT_EQ(lineage->job().state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(lineage->job().rounds_size(), 1);

  auto root = Reg().GetLineage("hvac", 1);
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root->ancestors_size(), 0);
  EXPECT_FALSE(root->has_job());
  EXPECT_EQ(Reg().GetLineage("hvac", 4).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistryGovernanceTest, LineageCrossesArchivedAncestors) {
  AddChain("hvac", 4);
  auto archived = Reg().ApplyRetention("hvac", 1, {}, Who("janitor"));
  ASSERT_TRUE(archived.ok()) << archived.status();
  EXPECT_THAT(*archived, ElementsAre(1, 2, 3));
  auto lineage = Reg().GetLineage("hvac", 4);
  ASSERT_TRUE(lineage.ok()) << lineage.status();
  ASSERT_EQ(lineage->ancestors_size(), 3);
  EXPECT_EQ(lineage->ancestors(2).version(), 1);
  EXPECT_TRUE(lineage->ancestors(0).archived());
  EXPECT_FALSE(lineage->version().archived());
}

TEST_F(RegistryGovernanceTest, RetentionKeepsNewestAliasedAndProtectedAndRemovesUnreferencedBlobs) {
  // hvac 1..7; 2 is aliased, 3 is protected (deployed), 6 and 7 are the newest two.
  AddChain("hvac", 7);
  // 4's content is also the live version 1 of another model; 5's is a job's global model.
  ASSERT_TRUE(Reg().AddVersion(NewVersion("pump", "hvac-4")).ok());
  ASSERT_TRUE(Reg().PutJob(MakeJob("job-1", 1, v1::JOB_RUNNING), Sha256Hex("hvac-5")).ok());
  ASSERT_TRUE(Reg().SetAlias("hvac", "production", 2, Who("alice")).ok());

  clock_.Set(absl::FromUnixMillis(1700000777000));
  auto archived = Reg().ApplyRetention("hvac", 2, {3}, Who("janitor", "nightly"));
  ASSERT_TRUE(archived.ok()) << archived.status();
  EXPECT_THAT(*archived, ElementsAre(1, 4, 5));

  auto list = Reg().ListVersions("hvac");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 7u);
  std::vector<int64_t> archived_flags;
  for (const auto& v : *list) {
    if (v.archived()) archived_flags.push_back(v.version());
  }
  EXPECT_THAT(archived_flags, ElementsAre(1, 4, 5));

  // The unreferenced artifact is gone; the shared ones stay.
  EXPECT_FALSE(fs::exists(Reg().BlobPath(Sha256Hex("hvac-1"))));
  EXPECT_EQ(Reg().ReadBlob(Sha256Hex("hvac-1")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Reg().ReadBlob(Sha256Hex("hvac-4")).ok());
  EXPECT_TRUE(Reg().ReadBlob(Sha256Hex("hvac-5")).ok());
  for (int kept : {2, 3, 6, 7}) {
    EXPECT_TRUE(Reg().ReadBlob(Sha256Hex(absl::StrCat("hvac-", kept))).ok()) << kept;
  }

  auto audit = Reg().ListAudit("hvac", "", 0);
  ASSERT_TRUE(audit.ok());
  ASSERT_EQ(audit->size(), 4u);  // alias + 3 archives
  EXPECT_THAT(Actions(*audit), ElementsAre("archive", "archive", "archive", "alias"));
  EXPECT_THAT(VersionNumbers(*audit), ElementsAre(5, 4, 1, 2));
  EXPECT_EQ((*audit)[2].detail(),
            absl::StrCat("sha256=", Sha256Hex("hvac-1"), " artifact=removed"));
  EXPECT_THAT((*audit)[1].detail(), HasSubstr("artifact=kept"));
  EXPECT_EQ((*audit)[0].principal(), "janitor");
  EXPECT_EQ((*audit)[0].reason(), "nightly");
  EXPECT_EQ((*audit)[0].time_unix_ms(), 1700000777000);

  // An archived version cannot take an alias.
  auto alias = Reg().SetAlias("hvac", "staging", 1, Who("alice"));
  EXPECT_EQ(alias.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(alias.status().message(), HasSubstr("archived"));

  // Applying the same policy again changes nothing.
  auto again = Reg().ApplyRetention("hvac", 2, {3}, Who("janitor"));
  ASSERT_TRUE(again.ok());
  EXPECT_THAT(*again, IsEmpty());
}

TEST_F(RegistryGovernanceTest, RetentionRemovesABlobOnceNoLiveVersionSharesIt) {
  AddChain("hvac", 3);
  // pump 1 shares hvac 1's content; once both are archived the file goes.
  ASSERT_TRUE(Reg().AddVersion(NewVersion("pump", "hvac-1")).ok());
  ASSERT_TRUE(Reg().AddVersion(NewVersion("pump", "pump-2")).ok());
  ASSERT_TRUE(Reg().ApplyRetention("hvac", 1, {}, Who("janitor")).ok());
  EXPECT_TRUE(Reg().HasBlob(Sha256Hex("hvac-1")));
  EXPECT_FALSE(Reg().HasBlob(Sha256Hex("hvac-2")));
  auto archived = Reg().ApplyRetention("pump", 1, {}, Who("janitor"));
  ASSERT_TRUE(archived.ok()) << archived.status();
  EXPECT_THAT(*archived, ElementsAre(1));
  EXPECT_FALSE(Reg().HasBlob(Sha256Hex("hvac-1")));
}

TEST_F(RegistryGovernanceTest, RetentionKeepZeroKeepsEverythingAndNegativeIsInvalid) {
  AddChain("hvac", 3);
  auto none = Reg().ApplyRetention("hvac", 0, {}, Who("janitor"));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_THAT(*none, IsEmpty());
  EXPECT_EQ(Reg().ApplyRetention("hvac", -1, {}, Who("janitor")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Reg().ApplyRetention("ghost", 1, {}, Who("janitor")).status().code(),
            absl::StatusCode::kNotFound);
  auto list = Reg().ListVersions("hvac");
  ASSERT_TRUE(list.ok());
  for (const auto& v : *list) EXPECT_FALSE(v.archived()) << v.version();
  auto audit = Reg().ListAudit("", "", 0);
  ASSERT_TRUE(audit.ok());
  EXPECT_THAT(*audit, IsEmpty());
}

TEST_F(RegistryGovernanceTest, AuditIsAppendOnlyNewestFirstAndFiltered) {
  auto entry = [](const std::string& action, const std::string& model, const std::string& dep) {
    v1::AuditEntry e;
    e.set_action(action);
    e.set_model(model);
    e.set_deployment_id(dep);
    return e;
  };
  clock_.Set(absl::FromUnixMillis(1700000000100));
  ASSERT_TRUE(Reg().AppendAudit(entry("job_start", "hvac", "")).ok());
  v1::AuditEntry timed = entry("deploy_create", "hvac", "dep-1");
  timed.set_time_unix_ms(42);
  timed.set_principal("carol");
  timed.set_id(999);  // Ignored: the database numbers entries.
  ASSERT_TRUE(Reg().AppendAudit(timed).ok());
  ASSERT_TRUE(Reg().AppendAudit(entry("job_start", "pump", "")).ok());
  ASSERT_TRUE(Reg().AppendAudit(entry("deploy_pause", "hvac", "dep-1")).ok());
  EXPECT_EQ(Reg().AppendAudit(entry("", "hvac", "")).code(), absl::StatusCode::kInvalidArgument);

  auto all = Reg().ListAudit("", "", 0);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(Actions(*all),
              ElementsAre("deploy_pause", "job_start", "deploy_create", "job_start"));
  EXPECT_EQ((*all)[3].principal(), "anonymous");
  EXPECT_EQ((*all)[3].time_unix_ms(), 1700000000100);
  EXPECT_EQ((*all)[2].principal(), "carol");
  EXPECT_EQ((*all)[2].time_unix_ms(), 42);
  EXPECT_NE((*all)[2].id(), 999);

  auto hvac = Reg().ListAudit("hvac", "", 0);
  ASSERT_TRUE(hvac.ok());
  EXPECT_THAT(Actions(*hvac), ElementsAre("deploy_pause", "deploy_create", "job_start"));
  auto dep = Reg().ListAudit("", "dep-1", 0);
  ASSERT_TRUE(dep.ok());
  EXPECT_THAT(Actions(*dep), ElementsAre("deploy_pause", "deploy_create"));
  auto both = Reg().ListAudit("pump", "dep-1", 0);
  ASSERT_TRUE(both.ok());
  EXPECT_THAT(*both, IsEmpty());
  auto limited = Reg().ListAudit("", "", 2);
  ASSERT_TRUE(limited.ok());
  EXPECT_THAT(Actions(*limited), ElementsAre("deploy_pause", "job_start"));
  EXPECT_EQ(Reg().ListAudit("", "", -1).status().code(), absl::StatusCode::kInvalidArgument);

  // Even a direct write to the database cannot rewrite or erase history.
  EXPECT_THAT(RawExec(DbPath(), "UPDATE audit SET principal = 'mallory'"),
              HasSubstr("append-only"));
  EXPECT_THAT(RawExec(DbPath(), "DELETE FROM audit"), HasSubstr("append-only"));
  Restart();
  auto after = Reg().ListAudit("", "", 0);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), 4u);
  EXPECT_EQ((*after)[2].principal(), "carol");
}

TEST_F(RegistryGovernanceTest, DeploymentsPutGetListWithAudit) {
  auto deployment = [](const std::string& id, int64_t created, v1::DeploymentState state) {
    v1::Deployment d;
    d.set_id(id);
    d.set_model("hvac");
    d.set_version(3);
    d.set_created_unix_ms(created);
    d.set_updated_unix_ms(created);
    d.set_state(state);
    return d;
  };
  ASSERT_TRUE(Reg().PutDeployment(deployment("dep-a", 100, v1::DEPLOYMENT_RUNNING)).ok());
  ASSERT_TRUE(Reg().PutDeployment(deployment("dep-c", 300, v1::DEPLOYMENT_RUNNING)).ok());
  ASSERT_TRUE(Reg().PutDeployment(deployment("dep-b", 300, v1::DEPLOYMENT_RUNNING)).ok());

  v1::Deployment paused = deployment("dep-a", 100, v1::DEPLOYMENT_PAUSED);
  paused.set_updated_unix_ms(500);
  paused.set_current_wave(2);
  paused.add_nodes()->set_node_id("edge-1");
  v1::AuditEntry why;
  why.set_action("deploy_pause");
  why.set_principal("dave");
  why.set_reason("error rate");
  ASSERT_TRUE(Reg().PutDeployment(paused, why).ok());

  Restart();
  auto got = Reg().GetDeployment("dep-a");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->state(), v1::DEPLOYMENT_PAUSED);
  EXPECT_EQ(got->current_wave(), 2);
  EXPECT_EQ(got->updated_unix_ms(), 500);
  ASSERT_EQ(got->nodes_size(), 1);
  EXPECT_EQ(got->nodes(0).node_id(), "edge-1");

  auto missing = Reg().GetDeployment("dep-z");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("dep-z"));

  auto list = Reg().ListDeployments();
  ASSERT_TRUE(list.ok()) << list.status();
  std::vector<std::string> ids;
  for (const auto& d : *list) ids.push_back(d.id());
  EXPECT_THAT(ids, ElementsAre("dep-b", "dep-c", "dep-a"));

  auto audit = Reg().ListAudit("", "dep-a", 0);
  ASSERT_TRUE(audit.ok());
  ASSERT_EQ(audit->size(), 1u);
  EXPECT_EQ((*audit)[0].action(), "deploy_pause");
  EXPECT_EQ((*audit)[0].principal(), "dave");
  EXPECT_EQ((*audit)[0].model(), "hvac");
  EXPECT_EQ((*audit)[0].version(), 3);
  EXPECT_EQ((*audit)[0].time_unix_ms(), 1700000000000);

  EXPECT_EQ(Reg().PutDeployment(deployment("", 1, v1::DEPLOYMENT_RUNNING)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(RegistryGovernanceTest, UpdateModelStoresPolicyRetentionAndDescription) {
  AddChain("hvac", 1);
  v1::GatePolicy policy;
  policy.set_min_accuracy(0.8);
  policy.set_max_regression(0.02);
  policy.mutable_holdout()->set_csv_path("/data/holdout.csv");
  auto updated = Reg().UpdateModel("hvac", std::string("HVAC v2"), policy, 5, Who("erin", "SLO"));
  ASSERT_TRUE(updated.ok()) << updated.status();

  // Unset arguments leave their fields alone.
  ASSERT_TRUE(Reg().UpdateModel("hvac", std::nullopt, std::nullopt, 3, Who("erin")).ok());
  Restart();
  auto model = Reg().GetModel("hvac");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->description(), "HVAC v2");
  EXPECT_EQ(model->keep_versions(), 3);
  ASSERT_TRUE(model->gate_policy().has_min_accuracy());
  EXPECT_DOUBLE_EQ(model->gate_policy().min_accuracy(), 0.8);
  EXPECT_FALSE(model->gate_policy().has_max_loss());
  EXPECT_EQ(model->gate_policy().holdout().csv_path(), "/data/holdout.csv");
  EXPECT_EQ(model->latest_version(), 1);

  auto audit = Reg().ListAudit("hvac", "", 0);
  ASSERT_TRUE(audit.ok());
  ASSERT_EQ(audit->size(), 2u);
  EXPECT_EQ((*audit)[1].action(), "update_model");
  EXPECT_EQ((*audit)[1].principal(), "erin");
  EXPECT_EQ((*audit)[1].reason(), "SLO");
  EXPECT_THAT((*audit)[1].detail(), HasSubstr("keep_versions=5"));
  EXPECT_EQ((*audit)[0].detail(), "keep_versions=3");

  auto missing = Reg().GetModel("ghost");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("ghost"));
  EXPECT_EQ(Reg()
                .UpdateModel("ghost", std::string("x"), std::nullopt, std::nullopt, Who("erin"))
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RegistryGovernanceTest, UpdateModelRejectsOutOfRangeThresholds) {
  AddChain("hvac", 1);
  struct Case {
    const char* field;
    v1::GatePolicy policy;
  };
  std::vector<Case> cases;
  for (double bad : {-0.1, 1.5, std::nan("")}) {
    v1::GatePolicy p;
    p.set_min_accuracy(bad);
    cases.push_back({"gate_policy.min_accuracy", p});
    v1::GatePolicy r;
    r.set_max_regression(bad);
    cases.push_back({"gate_policy.max_regression", r});
  }
  v1::GatePolicy loss;
  loss.set_max_loss(-1);
  cases.push_back({"gate_policy.max_loss", loss});
  for (const Case& c : cases) {
    auto r = Reg().UpdateModel("hvac", std::nullopt, c.policy, std::nullopt, Who("erin"));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.policy.ShortDebugString();
    EXPECT_THAT(r.status().message(), HasSubstr(c.field));
  }
  auto keep = Reg().UpdateModel("hvac", std::nullopt, std::nullopt, -2, Who("erin"));
  EXPECT_EQ(keep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keep.status().message(), HasSubstr("keep_versions"));

  // Boundaries are accepted.
  v1::GatePolicy edges;
  edges.set_min_accuracy(1.0);
  edges.set_max_regression(0.0);
  edges.set_max_loss(0.0);
  EXPECT_TRUE(Reg().UpdateModel("hvac", std::nullopt, edges, std::nullopt, Who("erin")).ok());
  // Only the successful call left an entry.
  auto audit = Reg().ListAudit("hvac", "", 0);
  ASSERT_TRUE(audit.ok());
  EXPECT_EQ(audit->size(), 1u);
}

// The version-1 schema exactly as release 1 created it.
constexpr char kSchemaV1[] = R"sql(
CREATE TABLE models (
  name            TEXT PRIMARY KEY NOT NULL,
  description     TEXT NOT NULL DEFAULT '',
  created_unix_ms INTEGER NOT NULL
);
CREATE TABLE versions (
  model           TEXT NOT NULL REFERENCES models(name),
  number          INTEGER NOT NULL CHECK (number > 0),
  parent          INTEGER CHECK (parent IS NULL OR parent > 0),  -- NULL when it has none
  sha256          TEXT NOT NULL,
  size_bytes      INTEGER NOT NULL,
  schema_hash     TEXT NOT NULL DEFAULT '',
  job_id          TEXT NOT NULL DEFAULT '',
  round           INTEGER NOT NULL DEFAULT 0,
  creator         TEXT NOT NULL DEFAULT '',
  reason          TEXT NOT NULL DEFAULT '',
  created_unix_ms INTEGER NOT NULL,
  proto           BLOB NOT NULL,  -- the full fedge.v1.Version
  UNIQUE (model, number),
  FOREIGN KEY (model, parent) REFERENCES versions(model, number)
);
CREATE INDEX versions_by_sha256 ON versions(sha256);
CREATE INDEX versions_by_job ON versions(job_id);
CREATE TABLE jobs (
  id              TEXT PRIMARY KEY NOT NULL,
  state           INTEGER NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  updated_unix_ms INTEGER NOT NULL,
  global_sha256   TEXT NOT NULL DEFAULT '',
  proto           BLOB NOT NULL  -- the full fedge.v1.Job
);
CREATE INDEX jobs_by_state ON jobs(state);
CREATE INDEX jobs_by_created ON jobs(created_unix_ms DESC, id);
CREATE TABLE desired_versions (
  node_id TEXT NOT NULL,
  model   TEXT NOT NULL,
  version INTEGER NOT NULL,
  sha256  TEXT NOT NULL,
  PRIMARY KEY (node_id, model)
);
)sql";

TEST_F(RegistryGovernanceTest, MigratesAVersionOneDatabaseKeepingItsData) {
  // A release-1 data directory: the v1 tables with one model, version, job and desired version,
  // and the version's blob on disk.
  const std::string content = "release-1 weights";
  const std::string sha = Sha256Hex(content);
  fs::create_directories(absl::StrCat(dir_, "/blobs/", sha.substr(0, 2)));
  WriteAll(absl::StrCat(dir_, "/blobs/", sha.substr(0, 2), "/", sha), content);
  v1::Version old;
  old.set_model("hvac");
  old.set_version(1);
  old.set_sha256(sha);
  old.set_size_bytes(static_cast<int64_t>(content.size()));
  old.set_job_id("job-1");
  old.set_creator("alice");
  old.set_created_unix_ms(1600000000000);
  (*old.mutable_metrics())["accuracy"] = 0.9;
  v1::Job job = MakeJob("job-1", 1600000000000, v1::JOB_SUCCEEDED);
  ASSERT_EQ(RawExec(DbPath(), kSchemaV1), "");
  ASSERT_EQ(
      RawExec(DbPath(),
              absl::StrCat("INSERT INTO models VALUES ('hvac', 'legacy', 1600000000000);"
                           "INSERT INTO versions (model, number, parent, sha256, size_bytes,"
                           " job_id, creator, created_unix_ms, proto) VALUES ('hvac', 1, "
                           "NULL, '",
                           sha, "', ", content.size(), ", 'job-1', 'alice', 1600000000000, X'",
                           absl::BytesToHexString(old.SerializeAsString()),
                           "');"
                           "INSERT INTO jobs VALUES ('job-1', 3, 1600000000000, "
                           "1600000000000, '', X'",
                           absl::BytesToHexString(job.SerializeAsString()),
                           "');"
                           "INSERT INTO desired_versions VALUES ('edge-1', 'hvac', 1, '",
                           sha,
                           "');"
                           "PRAGMA user_version = 1;")),
      "");

  EXPECT_EQ(Reg().SchemaVersion(), Registry::CurrentSchemaVersion());
  EXPECT_EQ(RawSql(DbPath(), "PRAGMA user_version"),
            std::to_string(Registry::CurrentSchemaVersion()));
  auto v = Reg().GetVersion("hvac", 1);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->sha256(), sha);
  EXPECT_EQ(v->creator(), "alice");
  EXPECT_DOUBLE_EQ(v->metrics().at("accuracy"), 0.9);
  EXPECT_FALSE(v->archived());
  EXPECT_THAT(Aliases(*v), IsEmpty());
  auto model = Reg().GetModel("hvac");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->description(), "legacy");
  EXPECT_EQ(model->keep_versions(), 0);
  EXPECT_FALSE(model->gate_policy().has_min_accuracy());
  EXPECT_TRUE(model->aliases().empty());
  auto got_job = Reg().GetJob("job-1");
  ASSERT_TRUE(got_job.ok());
  EXPECT_EQ(got_job->job.state(), v1::JOB_SUCCEEDED);
  auto desired = Reg().DesiredVersions("edge-1");
  ASSERT_TRUE(desired.ok());
  ASSERT_EQ(desired->size(), 1u);
  EXPECT_EQ((*desired)[0].sha256(), sha);

  // The new features work on the migrated data.
  ASSERT_TRUE(Reg().SetAlias("hvac", "production", 1, Who("alice")).ok());
  auto next = Reg().AddVersion(NewVersion("hvac", "release-2 weights", 1));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->version(), 2);
  auto lineage = Reg().GetLineage("hvac", 2);
  ASSERT_TRUE(lineage.ok());
  ASSERT_EQ(lineage->ancestors_size(), 1);
  EXPECT_THAT(Aliases(lineage->ancestors(0)), ElementsAre("production"));
  auto archived = Reg().ApplyRetention("hvac", 1, {}, Who("janitor"));
  ASSERT_TRUE(archived.ok());
  EXPECT_THAT(*archived, IsEmpty());  // 1 is aliased, 2 is the newest.
  auto audit = Reg().ListAudit("hvac", "", 0);
  ASSERT_TRUE(audit.ok());
  EXPECT_EQ(audit->size(), 1u);

  // Reopening at version 2 migrates nothing more.
  Restart();
  EXPECT_EQ(Reg().SchemaVersion(), Registry::CurrentSchemaVersion());
  auto again = Reg().GetVersion("hvac", 1);
  ASSERT_TRUE(again.ok());
  EXPECT_THAT(Aliases(*again), ElementsAre("production"));
}

}  // namespace
}  // namespace fedge::cloud::registry
