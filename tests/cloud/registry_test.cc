#include "cloud/registry/registry.h"

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
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
  EXPECT_GE(Registry::CurrentSchemaVersion(), 1);
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
  for (const char* table : {"models", "versions", "jobs", "desired_versions"}) {
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

}  // namespace
}  // namespace fedge::cloud::registry
