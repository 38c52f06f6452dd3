// The edge's downloads over real gRPC on loopback against a scripted Fleet server: a stream
// that breaks midway resumes from its offset, and a corrupted whole is fetched again.

#include "edge/agent/downloader.h"

#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/net/servers.h"
#include "common/sync/mutex.h"
#include "common/tensor/sha256.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace fedge::edge::agent {
namespace {

constexpr int64_t kChunk = 1 << 20;

// Serves one artifact. The first call breaks after `break_after_chunks` chunks; while
// `corrupt_first_whole` is set, the first complete pass flips one byte.
class ScriptedFleet : public v1::Fleet::Service {
 public:
  explicit ScriptedFleet(std::string artifact) : artifact_(std::move(artifact)) {}

  grpc::Status DownloadModel(grpc::ServerContext*, const v1::DownloadRequest* request,
                             grpc::ServerWriter<v1::Chunk>* writer) override {
    int call;
    {
      MutexLock lock(&mu_);
      offsets_.push_back(request->offset());
      call = calls_++;
    }
    const int64_t size = static_cast<int64_t>(artifact_.size());
    int sent = 0;
    for (int64_t off = request->offset(); off < size; off += kChunk) {
      if (call == 0 && sent == break_after_chunks) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "link dropped");
      }
      v1::Chunk chunk;
      chunk.set_offset(off);
      chunk.set_data(artifact_.substr(static_cast<size_t>(off), kChunk));
      if (call == 0 && corrupt_first_whole && off == 0) chunk.mutable_data()->at(10) ^= 1;
      if (off == request->offset()) {
        chunk.set_total_size(size);
        chunk.set_sha256(Sha256Hex(artifact_));
      }
      writer->Write(chunk);
      ++sent;
    }
    return grpc::Status::OK;
  }

  std::vector<int64_t> offsets() {
    MutexLock lock(&mu_);
    return offsets_;
  }

  int break_after_chunks = -1;
  bool corrupt_first_whole = false;

 private:
  const std::string artifact_;
  Mutex mu_;
  std::vector<int64_t> offsets_ ABSL_GUARDED_BY(mu_);
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
};

std::string RandomBytes(size_t n) {
  std::mt19937 rng(7);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

struct Harness {
  explicit Harness(ScriptedFleet* fleet) {
    auto server = net::StartGrpcServer({"127.0.0.1:0", {{fleet, "fedge.v1.Fleet"}}});
    EXPECT_TRUE(server.ok());
    started = std::move(*server);
    stub = v1::Fleet::NewStub(net::MakeChannel(absl::StrCat("127.0.0.1:", started.port)));
    auto rt = runtime::Runtime::Open({dir.path(), {}});
    EXPECT_TRUE(rt.ok());
    runtime = std::move(*rt);
  }
  ~Harness() { net::StopGrpcServer(&started, std::chrono::seconds(1)); }

  Downloader MakeDownloader() {
    Downloader::Options o;
    o.stub = stub.get();
    o.node_id = "edge-1";
    o.runtime = runtime.get();
    o.initial_backoff = absl::Milliseconds(5);
    return Downloader(o);
  }

  testing::TempDir dir;
  net::StartedGrpcServer started;
  std::unique_ptr<v1::Fleet::Stub> stub;
  std::unique_ptr<runtime::Runtime> runtime;
};

TEST(DownloaderTest, AnInterruptedDownloadResumesFromItsOffset) {
  const std::string artifact = RandomBytes(5 * kChunk + 123);
  ScriptedFleet fleet(artifact);
  fleet.break_after_chunks = 3;
  Harness h(&fleet);
  int64_t downloaded = 0;
  auto got = h.MakeDownloader().Fetch(Sha256Hex(artifact), &downloaded);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, artifact);
  // The second request starts where the first stream broke, and no byte crossed twice.
  EXPECT_EQ(fleet.offsets(), (std::vector<int64_t>{0, 3 * kChunk}));
  EXPECT_EQ(downloaded, static_cast<int64_t>(artifact.size()));
  // Cached now: a second fetch makes no call.
  auto again = h.MakeDownloader().Fetch(Sha256Hex(artifact), &downloaded);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(downloaded, 0);
  EXPECT_EQ(fleet.offsets().size(), 2u);
  EXPECT_FALSE(std::filesystem::exists(h.runtime->CachePath(Sha256Hex(artifact)) + ".part"));
}

TEST(DownloaderTest, APartLeftByAnEarlierProcessIsResumed) {
  const std::string artifact = RandomBytes(3 * kChunk);
  ScriptedFleet fleet(artifact);
  Harness h(&fleet);
  {
    std::ofstream part(h.runtime->CachePath(Sha256Hex(artifact)) + ".part", std::ios::binary);
    part << artifact.substr(0, kChunk);
  }
  int64_t downloaded = 0;
  auto got = h.MakeDownloader().Fetch(Sha256Hex(artifact), &downloaded);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, artifact);
  EXPECT_EQ(fleet.offsets(), std::vector<int64_t>{kChunk});
  EXPECT_EQ(downloaded, 2 * kChunk);
}

TEST(DownloaderTest, ACorruptedDownloadIsDetectedAndFetchedAgain) {
  const std::string artifact = RandomBytes(2 * kChunk + 5);
  ScriptedFleet fleet(artifact);
  fleet.corrupt_first_whole = true;
  Harness h(&fleet);
  int64_t downloaded = 0;
  auto got = h.MakeDownloader().Fetch(Sha256Hex(artifact), &downloaded);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, artifact);
  EXPECT_EQ(fleet.offsets(), (std::vector<int64_t>{0, 0}));
}

TEST(DownloaderTest, AnUnknownDigestIsNotRetried) {
  ScriptedFleet fleet("abc");
  Harness h(&fleet);
  int64_t downloaded = 0;
  EXPECT_EQ(h.MakeDownloader().Fetch("nope", &downloaded).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(fleet.offsets().empty());
}

}  // namespace
}  // namespace fedge::edge::agent
