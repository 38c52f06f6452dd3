// fedgectl's side of Admin authentication, running the real binary: `tokens create` prints a
// secret and a token line that verifies against it, and calls carry --token or FEDGE_TOKEN,
// with errors that say how to fix a missing token or a role too low.

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/auth/tokens.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"

namespace fedge {
namespace {

struct CliRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

CliRun Fedgectl(const std::string& args, const std::string& env = "") {
  const std::string cmd =
      absl::StrCat("env -u FEDGE_TOKEN ", env, " ", FEDGECTL_PATH, " ", args, " 2>&1");
  CliRun run;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return run;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) run.output.append(buf, n);
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

// "key: value" lines of `tokens create`.
std::string Field(const std::string& output, const std::string& key) {
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    if (absl::ConsumePrefix(&line, key + ":")) return std::string(absl::StripAsciiWhitespace(line));
  }
  return "";
}

// Independent of fedge's code: sha256sum from coreutils.
std::string Sha256Sum(const std::string& text) {
  testing::TempDir dir;
  std::ofstream(dir.path() + "/in", std::ios::binary) << text;
  FILE* pipe = popen(absl::StrCat("sha256sum ", dir.path(), "/in").c_str(), "r");
  char buf[65] = {0};
  const size_t n = fread(buf, 1, 64, pipe);
  pclose(pipe);
  return std::string(buf, n);
}

TEST(FedgectlTokensTest, CreatePrintsASecretAndALineThatVerifiesAgainstIt) {
  CliRun run = Fedgectl("tokens create --name=ci-bot --role=operator");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const std::string secret = Field(run.output, "secret");
  const std::string line = Field(run.output, "line");
  ASSERT_TRUE(absl::StartsWith(secret, "fedge_")) << run.output;
  EXPECT_EQ(line, absl::StrCat("ci-bot operator sha256:", Sha256Sum(secret)));
  // The line is a valid token file on its own.
  auto entries = auth::ParseTokenFile(line, "line");
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_EQ((*entries)[0].role, auth::Role::kOperator);
  // A second token is a different secret.
  EXPECT_NE(Field(Fedgectl("tokens create --name=ci-bot --role=operator").output, "secret"),
            secret);
}

TEST(FedgectlTokensTest, CreateRefusesABadNameOrRoleNamingTheFix) {
  CliRun run = Fedgectl("tokens create --name=ci-bot");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(run.output, "tokens create needs --role")) << run.output;
  run = Fedgectl("tokens create --name=ci-bot --role=root");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(run.output, "unknown role 'root': use viewer, operator or admin"))
      << run.output;
  run = Fedgectl("tokens create --name='ci bot' --role=admin");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(run.output, "--name='ci bot' is invalid")) << run.output;
  run = Fedgectl("tokens create --role=admin");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(run.output, "tokens create needs --name")) << run.output;
}

class FedgectlAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    viewer_ = *auth::GenerateSecret();
    std::ofstream(dir_.path() + "/tokens")
        << auth::TokenLine("vera", auth::Role::kViewer, viewer_) << "\n";
    auto cloud = testing::TestCloud::Start(dir_.path(), absl::Seconds(5), dir_.path() + "/tokens");
    ASSERT_TRUE(cloud.ok()) << cloud.status();
    cloud_ = std::move(*cloud);
    admin_flag_ = absl::StrCat("--insecure --admin=127.0.0.1:", cloud_.server->admin_port());
  }
  void TearDown() override {
    if (cloud_.server) cloud_.server->Shutdown();
  }
  testing::TempDir dir_;
  testing::TestCloud cloud_;
  std::string viewer_;
  std::string admin_flag_;
};

TEST_F(FedgectlAuthTest, WithoutATokenSaysHowToGetOne) {
  CliRun run = Fedgectl(absl::StrCat(admin_flag_, " models list"));
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(run.output, "no token sent: set FEDGE_TOKEN or --token"))
      << run.output;
}

TEST_F(FedgectlAuthTest, AnUnknownTokenIsNamedAsSuch) {
  CliRun run = Fedgectl(absl::StrCat(admin_flag_, " --token=fedge_wrong models list"));
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(run.output, "unknown or revoked")) << run.output;
  EXPECT_TRUE(absl::StrContains(run.output, "not in the cloud's tokens file")) << run.output;
}

TEST_F(FedgectlAuthTest, SendsTheTokenFromTheFlagOrTheEnvironment) {
  CliRun run = Fedgectl(absl::StrCat(admin_flag_, " --token=", viewer_, " models list"));
  EXPECT_EQ(run.exit_code, 0) << run.output;
  run = Fedgectl(absl::StrCat(admin_flag_, " models list"), "FEDGE_TOKEN=" + viewer_);
  EXPECT_EQ(run.exit_code, 0) << run.output;
}

TEST_F(FedgectlAuthTest, ARoleTooLowNamesTheRoleNeeded) {
  CliRun run = Fedgectl(absl::StrCat(admin_flag_, " models retention m"), "FEDGE_TOKEN=" + viewer_);
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(
      run.output, "Admin.ApplyRetention needs role admin; token 'vera' has role viewer"))
      << run.output;
  EXPECT_TRUE(absl::StrContains(run.output, "ask an admin for a token with that role"))
      << run.output;
}

}  // namespace
}  // namespace fedge
