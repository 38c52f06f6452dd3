#include "cloud/api/upload_stage.h"

#include <sys/stat.h>

#include <fstream>
#include <string>

#include "common/tensor/sha256.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace fedge::cloud::api {
namespace {

// Bytes that differ at every offset, so that a misplaced chunk changes the digest.
std::string Payload(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 251) & 0xff);
  return s;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Feeds `payload` from `from` in chunks of `chunk` bytes.
void AppendFrom(UploadStage* stage, const std::string& payload, size_t from, size_t chunk) {
  for (size_t at = from; at < payload.size(); at += chunk) {
    ASSERT_TRUE(stage->Append(payload.substr(at, chunk)).ok());
  }
}

TEST(UploadStageTest, PartFileHoldsThePayloadAndTheDigestMatchesOneComputedWhole) {
  testing::TempDir dir;
  const std::string part = dir.path() + "/u.part";
  // More chunks than the digest queue holds, so the caller has to wait for the digest thread.
  const std::string payload = Payload(40 * 4096 + 17);
  UploadStage stage(part, static_cast<int64_t>(payload.size()));
  ASSERT_TRUE(stage.Open(0).ok());
  AppendFrom(&stage, payload, 0, 4096);
  EXPECT_EQ(stage.size(), static_cast<int64_t>(payload.size()));
  EXPECT_EQ(stage.FinishDigest(), Sha256Hex(payload));
  auto contents = stage.Contents();
  ASSERT_TRUE(contents.ok()) << contents.status();
  EXPECT_EQ(*contents, payload);
  EXPECT_EQ(ReadFile(part), payload);
  stage.Discard();
  EXPECT_FALSE(Exists(part));
}

TEST(UploadStageTest, WithoutAPartFileThePayloadIsKeptInMemory) {
  const std::string payload = Payload(10000);
  UploadStage stage("", static_cast<int64_t>(payload.size()));
  ASSERT_TRUE(stage.Open(0).ok());
  AppendFrom(&stage, payload, 0, 999);
  EXPECT_EQ(stage.FinishDigest(), Sha256Hex(payload));
  auto contents = stage.Contents();
  ASSERT_TRUE(contents.ok());
  EXPECT_EQ(*contents, payload);
  // Nothing to resume from in memory.
  UploadStage resumed("", static_cast<int64_t>(payload.size()));
  absl::Status st = resumed.Open(5000);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("holds 0 bytes"), std::string::npos) << st;
}

TEST(UploadStageTest, AResumeContinuesTheHeldPartAndDigestsItWhole) {
  testing::TempDir dir;
  const std::string part = dir.path() + "/u.part";
  const std::string payload = Payload(50000);
  {
    // A first attempt breaks off after 3 chunks; the part stays.
    UploadStage first(part, static_cast<int64_t>(payload.size()));
    ASSERT_TRUE(first.Open(0).ok());
    for (size_t at = 0; at < 3 * 8192; at += 8192) {
      ASSERT_TRUE(first.Append(payload.substr(at, 8192)).ok());
    }
  }
  ASSERT_EQ(ReadFile(part).size(), 3u * 8192);

  // Resuming anywhere but at the held size is refused, naming both, and keeps the part.
  {
    UploadStage wrong(part, static_cast<int64_t>(payload.size()));
    absl::Status st = wrong.Open(8192);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("offset 8192 but the cloud holds 24576"), std::string::npos) << st;
  }
  UploadStage second(part, static_cast<int64_t>(payload.size()));
  ASSERT_TRUE(second.Open(3 * 8192).ok());
  EXPECT_EQ(second.size(), 3 * 8192);
  AppendFrom(&second, payload, 3 * 8192, 8192);
  EXPECT_EQ(second.FinishDigest(), Sha256Hex(payload));
  auto contents = second.Contents();
  ASSERT_TRUE(contents.ok());
  EXPECT_EQ(*contents, payload);
}

TEST(UploadStageTest, AHeldPartLargerThanTheUploadIsDroppedAsDataLoss) {
  testing::TempDir dir;
  const std::string part = dir.path() + "/u.part";
  { std::ofstream(part, std::ios::binary) << Payload(3000); }
  UploadStage stage(part, 2000);
  absl::Status st = stage.Open(3000);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_FALSE(Exists(part));
}

TEST(UploadStageTest, AnEmptyPayloadHasTheEmptyDigest) {
  testing::TempDir dir;
  UploadStage stage(dir.path() + "/u.part", 0);
  ASSERT_TRUE(stage.Open(0).ok());
  EXPECT_EQ(stage.FinishDigest(), Sha256Hex(""));
  auto contents = stage.Contents();
  ASSERT_TRUE(contents.ok());
  EXPECT_TRUE(contents->empty());
}

TEST(UploadStageTest, ChunksAreCheckedForOrderSizeAndTheDeclaredTotal) {
  const std::string payload = Payload(3000);
  UploadStage stage("", 3000);
  // The first chunk opens the stage; in memory there is nothing to resume from.
  EXPECT_EQ(stage.AddChunk(-5, "x").code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(stage.AddChunk(0, payload.substr(0, 1000)).ok());
  EXPECT_FALSE(stage.resumed());
  absl::Status st = stage.AddChunk(2000, payload.substr(2000, 1000));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("expected 1000"), std::string::npos) << st;
  // An empty chunk would let a stream run forever without progress.
  EXPECT_EQ(stage.AddChunk(1000, "").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stage.AddChunk(1000, std::string(kMaxChunkBytes + 1, 'x')).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(stage.AddChunk(1000, std::string(2001, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  // None of the refused chunks changed what is staged.
  EXPECT_EQ(stage.size(), 1000);
  ASSERT_TRUE(stage.AddChunk(1000, payload.substr(1000)).ok());
  EXPECT_EQ(stage.FinishDigest(), Sha256Hex(payload));
  EXPECT_EQ(*stage.Contents(), payload);
}

TEST(UploadStageTest, AFirstChunkPastZeroResumesThePart) {
  testing::TempDir dir;
  const std::string part = dir.path() + "/u.part";
  const std::string payload = Payload(5000);
  {
    UploadStage first(part, 5000);
    ASSERT_TRUE(first.AddChunk(0, payload.substr(0, 2000)).ok());
  }
  UploadStage second(part, 5000);
  ASSERT_TRUE(second.AddChunk(2000, payload.substr(2000)).ok());
  EXPECT_TRUE(second.resumed());
  EXPECT_EQ(second.FinishDigest(), Sha256Hex(payload));
}

TEST(UploadStageTest, NegativeDeclaredSizeIsRefusedInMemoryAndWithAPartFile) {
  testing::TempDir dir;
  for (const std::string& part : {std::string(), dir.path() + "/u.part"}) {
    UploadStage stage(part, -5);
    const absl::Status st = stage.AddChunk(0, "abcd");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << part;
    EXPECT_EQ(stage.size(), 0);
  }
}

}  // namespace
}  // namespace fedge::cloud::api
