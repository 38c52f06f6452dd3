#include "common/app/app.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gtest/gtest.h"

ABSL_FLAG(int, app_test_answer, 0, "A flag of this test, for the parser to find.");

namespace fedge::app {
namespace {

// Runs ParseFlags on a command line, as main() would.
std::vector<char*> Parse(std::vector<std::string> args) {
  static std::vector<std::string> storage;
  storage = std::move(args);
  std::vector<char*> argv;
  for (std::string& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  return ParseFlags(static_cast<int>(storage.size()), argv.data(), "app_test: usage text");
}

TEST(ParseFlagsTest, HelpPrintsUsageAndExitsZero) {
  EXPECT_EXIT(Parse({"app_test", "--help"}), testing::ExitedWithCode(0), "");
}

TEST(ParseFlagsTest, HelpfullExitsZero) {
  EXPECT_EXIT(Parse({"app_test", "--helpfull"}), testing::ExitedWithCode(0), "");
}

TEST(ParseFlagsTest, OnlyCheckArgsExitsZeroWhenFlagsAreValid) {
  EXPECT_EXIT(Parse({"app_test", "--app_test_answer=42", "--only_check_args"}),
              testing::ExitedWithCode(0), "");
}

TEST(ParseFlagsTest, UnknownFlagExitsOne) {
  EXPECT_EXIT(Parse({"app_test", "--no_such_flag=1"}), testing::ExitedWithCode(1),
              "Unknown command line flag 'no_such_flag'");
}

TEST(ParseFlagsTest, ReturnsPositionalArgumentsAndSetsFlags) {
  std::vector<char*> positional = Parse({"app_test", "--app_test_answer=42", "list", "nodes"});
  ASSERT_EQ(positional.size(), 3u);  // argv[0] stays first, as with absl::ParseCommandLine
  EXPECT_STREQ(positional[1], "list");
  EXPECT_STREQ(positional[2], "nodes");
  EXPECT_EQ(absl::GetFlag(FLAGS_app_test_answer), 42);
}

}  // namespace
}  // namespace fedge::app
