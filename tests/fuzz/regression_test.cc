// Replays each fuzz target's seed corpus (fuzz/corpus/<target>) and every input that once broke
// it (fuzz/regressions/<target>) through the same entry function the fuzzer calls. A broken
// rule aborts, which fails this test with the check's message on stderr.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/targets/targets.h"
#include "gtest/gtest.h"

namespace fedge::fuzz {
namespace {

using Entry = int (*)(const uint8_t*, size_t);

// Replays every file in the target's corpus and regressions; returns how many.
int Replay(const std::string& target, Entry entry) {
  int replayed = 0;
  for (const char* kind : {"corpus", "regressions"}) {
    const std::filesystem::path dir =
        std::filesystem::path(FEDGE_SOURCE_DIR) / "fuzz" / kind / target;
    if (!std::filesystem::is_directory(dir)) continue;
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      if (e.is_regular_file()) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      SCOPED_TRACE(file.string());
      std::ifstream in(file, std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
      EXPECT_EQ(entry(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), 0);
      ++replayed;
    }
  }
  return replayed;
}

TEST(FuzzRegressionTest, CodecInputsDecodeOrFailCleanly) {
  EXPECT_GT(Replay("fuzz_codec", FuzzCodec), 0);
}

TEST(FuzzRegressionTest, CsvInputsParseOrFailCleanly) { EXPECT_GT(Replay("fuzz_csv", FuzzCsv), 0); }

TEST(FuzzRegressionTest, UploadChunkSequencesStageExactlyWhatWasAccepted) {
  EXPECT_GT(Replay("fuzz_upload_chunks", FuzzUploadChunks), 0);
}

TEST(FuzzRegressionTest, RestBodiesParseOrFailCleanly) {
  EXPECT_GT(Replay("fuzz_rest_json", FuzzRestJson), 0);
}

TEST(FuzzRegressionTest, ContractsParseOrFailCleanly) {
  EXPECT_GT(Replay("fuzz_contract", FuzzContract), 0);
}

}  // namespace
}  // namespace fedge::fuzz
