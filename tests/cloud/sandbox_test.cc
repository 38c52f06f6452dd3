// CheckArchiveInSandbox with real processes and real files: the fedge-model-check built with
// these tests for real archives, and small shell scripts standing in for a helper that crashes,
// hits a limit or hangs.

#include "cloud/models/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "cloud/models/model_check_protocol.h"
#include "common/tensor/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace fedge::cloud::models {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteScript(const std::string& path, const std::string& body) {
  std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
  chmod(path.c_str(), 0700);
}

int CountEntries(const std::string& dir) {
  int n = 0;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return -1;
  while (dirent* e = readdir(d)) {
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") ++n;
  }
  closedir(d);
  return n;
}

// No child of this test process is left unreaped.
bool NoChildren() { return waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD; }

class SandboxTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    archive_dir_ = new testing::TempDir();
    // A 4-feature, 3-class TorchScript module saved by Python's torch.jit.save, as users do.
    const std::string path = archive_dir_->path() + "/good.pt";
    const std::string cmd = absl::StrCat(
        "/usr/bin/python3 -c 'import torch; torch.jit.save(torch.jit.script(torch.nn.Sequential("
        "torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))), \"",
        path, "\")'");
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    good_ = new std::string(ReadFile(path));
  }
  static void TearDownTestSuite() {
    delete good_;
    delete archive_dir_;
  }
  void SetUp() override {
    ASSERT_FALSE(good_->empty());
    limits_.helper_path = FEDGE_MODEL_CHECK_PATH;
    limits_.temp_dir = work_.path() + "/tmp";
    ASSERT_EQ(mkdir(limits_.temp_dir.c_str(), 0700), 0);
    limits_.timeout = absl::Seconds(30);
  }
  std::string Script(const std::string& name, const std::string& body) {
    const std::string path = work_.path() + "/" + name;
    WriteScript(path, body);
    return path;
  }

  static testing::TempDir* archive_dir_;
  static std::string* good_;
  testing::TempDir work_;
  SandboxLimits limits_;
};

testing::TempDir* SandboxTest::archive_dir_ = nullptr;
std::string* SandboxTest::good_ = nullptr;

TEST_F(SandboxTest, AcceptsAGoodArchiveAndRemovesItsTempFile) {
  absl::Status st = CheckArchiveInSandbox(*good_, Sha256Hex(*good_), 4, 3, limits_);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(CountEntries(limits_.temp_dir), 0);
  EXPECT_TRUE(NoChildren());
}

TEST_F(SandboxTest, RefusesAShaMismatchBeforeStartingAnyProcess) {
  const std::string marker = work_.path() + "/helper-ran";
  limits_.helper_path = Script("helper.sh", absl::StrCat("touch ", marker));
  const std::string wrong(64, 'a');
  absl::Status st = CheckArchiveInSandbox(*good_, wrong, 4, 3, limits_);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr(wrong));
  EXPECT_THAT(st.message(), HasSubstr(Sha256Hex(*good_)));
  EXPECT_NE(access(marker.c_str(), F_OK), 0) << "the helper ran";
  EXPECT_EQ(CountEntries(limits_.temp_dir), 0);
}

TEST_F(SandboxTest, RefusesRandomBytes) {
  std::string noise(5000, '\0');
  uint32_t x = 12345;
  for (char& c : noise) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  absl::Status st = CheckArchiveInSandbox(noise, "", 4, 3, limits_);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr("not a TorchScript archive"));
  EXPECT_TRUE(NoChildren());
}

TEST_F(SandboxTest, RefusesATruncatedArchive) {
  const std::string half = good_->substr(0, good_->size() / 2);
  absl::Status st = CheckArchiveInSandbox(half, Sha256Hex(half), 4, 3, limits_);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(CountEntries(limits_.temp_dir), 0);
}

TEST_F(SandboxTest, RefusesAModelOfTheWrongShapeWithTheHelpersMessage) {
  absl::Status st = CheckArchiveInSandbox(*good_, "", 4, 2, limits_);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr("outputs 3 scores but the contract has 2 labels"));
}

// Runs Python's torch (Debian's) with `code`, where PATH names the archive to write.
std::string SavePython(const std::string& dir, const std::string& name, const std::string& code) {
  const std::string path = dir + "/" + name;
  const std::string script = dir + "/" + name + ".py";
  std::ofstream(script) << "import torch, zipfile\nPATH = '" << path << "'\n" << code << "\n";
  const std::string cmd = absl::StrCat("/usr/bin/python3 ", script);
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return ReadFile(path);
}

TEST_F(SandboxTest, RefusesAModelThatLoopsOnlyOnBatchesLargerThanOne) {
  // Passes a one-row probe; spins forever on the batches evaluation and training use.
  const std::string looping = SavePython(work_.path(), "loop.pt", R"(
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l = torch.nn.Linear(4, 3)
    def forward(self, x):
        n = 0
        while x.size(0) > 1:
            n += 1
        return self.l(x)
torch.jit.save(torch.jit.script(M()), PATH))");
  ASSERT_FALSE(looping.empty());
  limits_.cpu_seconds = 2;
  absl::Status st = CheckArchiveInSandbox(looping, "", 4, 3, limits_);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr("CPU limit of 2 s"));
  EXPECT_TRUE(NoChildren());
}

TEST_F(SandboxTest, RefusesAZipBombBeforeStartingAnyProcess) {
  // The good model with a 300 MB entry of zeros that deflates to a few hundred KB.
  const std::string bomb = SavePython(work_.path(), "bomb.pt", R"(
torch.jit.save(torch.jit.script(torch.nn.Linear(4, 3)), PATH)
with zipfile.ZipFile(PATH, 'a', compression=zipfile.ZIP_DEFLATED) as z:
    z.writestr('archive/extra/padding', bytes(300 * 1000 * 1000)))");
  ASSERT_FALSE(bomb.empty());
  EXPECT_LT(bomb.size(), 2u << 20);
  const std::string marker = work_.path() + "/helper-ran";
  limits_.helper_path = Script("helper.sh", absl::StrCat("touch ", marker));
  absl::Status st = CheckArchiveInSandbox(bomb, "", 4, 3, limits_);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr("unpacks to more than"));
  EXPECT_NE(access(marker.c_str(), F_OK), 0) << "the helper ran";
  // Entry counts are bounded too.
  limits_.max_entries = 3;
  st = CheckArchiveLimits(*good_, limits_);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr("entries; at most 3"));
}

TEST_F(SandboxTest, ScoresAUserModelInTheHelperAsTorchItselfDoes) {
  // 200 rows of seeded data, written as the CSV the helper reads.
  std::string csv = "f0,f1,f2,f3,label\n";
  uint32_t x = 7;
  auto next = [&x] {
    x = x * 1664525u + 1013904223u;
    return static_cast<double>(x >> 8) / static_cast<double>(1u << 24) * 4.0 - 2.0;
  };
  for (int r = 0; r < 200; ++r) {
    for (int f = 0; f < 4; ++f) absl::StrAppend(&csv, absl::StrFormat("%.6f", next()), ",");
    absl::StrAppend(&csv, r % 3, "\n");
  }
  const std::string data = work_.path() + "/holdout.csv";
  std::ofstream(data) << csv;
  auto score = EvaluateArchiveInSandbox(*good_, csv, 4, 3, limits_);
  ASSERT_TRUE(score.ok()) << score.status();
  EXPECT_EQ(score->num_samples, 200);
  // The same archive and rows scored by Python's torch.
  const std::string out = work_.path() + "/expected.txt";
  const std::string cmd = absl::StrCat(
      "/usr/bin/python3 -c 'import torch, csv\n"
      "rows = list(csv.reader(open(\"",
      data,
      "\")))[1:]\n"
      "x = torch.tensor([[float(v) for v in r[:4]] for r in rows])\n"
      "y = torch.tensor([int(r[4]) for r in rows])\n"
      "m = torch.jit.load(\"",
      archive_dir_->path(),
      "/good.pt\")\n"
      "z = m(x)\n"
      "print(float((z.argmax(1) == y).float().mean()), float(torch.nn.functional.cross_entropy(z, "
      "y)))' > ",
      out);
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  double accuracy = -1, loss = -1;
  std::ifstream(out) >> accuracy >> loss;
  EXPECT_NEAR(score->accuracy, accuracy, 1e-6);  // Python averages in float32
  EXPECT_NEAR(score->loss, loss, 1e-4);
  EXPECT_EQ(CountEntries(limits_.temp_dir), 0);
  EXPECT_TRUE(NoChildren());
}

TEST_F(SandboxTest, KillRunningModelChecksEndsAHelperAtOnce) {
  limits_.helper_path = Script("sleeper.sh", "exec sleep 60");
  absl::Status st;
  std::thread runner([&] { st = CheckArchiveInSandbox(*good_, "", 4, 3, limits_); });
  const absl::Time start = absl::Now();
  int killed = 0;
  while (killed == 0 && absl::Now() - start < absl::Seconds(10)) {
    killed = KillRunningModelChecks();
    absl::SleepFor(absl::Milliseconds(20));
  }
  runner.join();
  EXPECT_EQ(killed, 1);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  // Ended by the kill, not by the 30 s timeout.
  EXPECT_THAT(st.message(), HasSubstr("was killed"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  EXPECT_TRUE(NoChildren());
}

TEST_F(SandboxTest, ReportsTheMemoryLimit) {
  if (!kAddressSpaceLimitApplies) GTEST_SKIP() << "no RLIMIT_AS in a sanitizer build";
  // LibTorch alone maps more than this, so loading fails for want of address space.
  limits_.memory_mb = 300;
  absl::Status st = CheckArchiveInSandbox(*good_, "", 4, 3, limits_);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr("memory limit of 300 MB"));
}

TEST_F(SandboxTest, ReportsACrashWithItsSignal) {
  limits_.helper_path = Script("segv.sh", "kill -SEGV $$");
  absl::Status st = CheckArchiveInSandbox(*good_, "", 4, 3, limits_);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr("crashed the model check (signal 11"));
  EXPECT_TRUE(NoChildren());
  EXPECT_EQ(CountEntries(limits_.temp_dir), 0);
}

TEST_F(SandboxTest, ReportsTheCpuLimit) {
  // The helper's own RLIMIT_CPU is exercised here for real: the script spins under a 1 s limit.
  limits_.helper_path = Script("spin.sh", "ulimit -t 1; while :; do :; done");
  absl::Status st = CheckArchiveInSandbox(*good_, "", 4, 3, limits_);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr("CPU limit"));
  EXPECT_TRUE(NoChildren());
}

TEST_F(SandboxTest, KillsAndReapsAHelperThatRunsPastTheTimeout) {
  // The script's child holds the pipe too: the whole process group must go.
  limits_.helper_path = Script("hang.sh", "sleep 30 & wait");
  limits_.timeout = absl::Milliseconds(500);
  const absl::Time start = absl::Now();
  absl::Status st = CheckArchiveInSandbox(*good_, "", 4, 3, limits_);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr("model check timed out after 500ms"));
  EXPECT_TRUE(NoChildren());
  EXPECT_EQ(CountEntries(limits_.temp_dir), 0);
}

TEST_F(SandboxTest, GivesTheHelperACleanEnvironmentAndNoInheritedDescriptors) {
  const std::string report = work_.path() + "/report";
  setenv("FEDGE_SANDBOX_TEST_SECRET", "leak", 1);
  // A descriptor opened without O_CLOEXEC, as a careless library in the coordinator might.
  const int leaky = open("/dev/null", O_RDONLY);
  ASSERT_GE(leaky, 3);
  limits_.helper_path =
      Script("env.sh", absl::StrCat("env > ", report, ".env; if [ -e /proc/$$/fd/", leaky,
                                    " ]; then echo leaked > ", report,
                                    ".fd; fi; "
                                    "if [ -e /proc/$$/fd/0 ]; then readlink /proc/$$/fd/0 > ",
                                    report, ".stdin; fi"));
  limits_.temp_dir = work_.path();
  absl::Status st = CheckArchiveInSandbox(*good_, "", 4, 3, limits_);
  close(leaky);
  unsetenv("FEDGE_SANDBOX_TEST_SECRET");
  EXPECT_TRUE(st.ok()) << st;
  const std::string env = ReadFile(report + ".env");
  EXPECT_THAT(env, HasSubstr("OMP_NUM_THREADS=1"));
  EXPECT_THAT(env, ::testing::Not(HasSubstr("FEDGE_SANDBOX_TEST_SECRET")));
  EXPECT_NE(access((report + ".fd").c_str(), F_OK), 0) << "fd " << leaky << " reached the helper";
  EXPECT_EQ(ReadFile(report + ".stdin"), "/dev/null\n");
}

TEST_F(SandboxTest, MissingHelperIsAFailedPrecondition) {
  limits_.helper_path = work_.path() + "/no-such-helper";
  absl::Status st = CheckArchiveInSandbox(*good_, Sha256Hex(*good_), 4, 3, limits_);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr(limits_.helper_path));
  EXPECT_THAT(st.message(), HasSubstr("install"));
}

TEST_F(SandboxTest, DefaultHelperIsLookedUpBesideTheBinaryThenOnPath) {
  // This test binary has no fedge-model-check beside it; PATH decides.
  const char* old = std::getenv("PATH");
  const std::string saved = old == nullptr ? "" : old;
  const std::string bin = work_.path() + "/bin";
  ASSERT_EQ(mkdir(bin.c_str(), 0700), 0);
  setenv("PATH", bin.c_str(), 1);
  auto missing = FindModelCheckHelper("");
  WriteScript(bin + "/" + kModelCheckBinary, "exit 0");
  auto found = FindModelCheckHelper("");
  setenv("PATH", saved.c_str(), 1);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.status().message(), HasSubstr("install"));
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, bin + "/" + kModelCheckBinary);
}

}  // namespace
}  // namespace fedge::cloud::models
