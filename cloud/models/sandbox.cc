#include "cloud/models/sandbox.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cloud/models/model_check_protocol.h"
#include "common/status/status.h"
#include "common/tensor/sha256.h"

namespace fedge::cloud::models {

namespace {

// The helper's report is a line or two; anything past this is drained and dropped.
constexpr size_t kMaxOutput = 64 << 10;

std::string ErrnoText(absl::string_view what) {
  return absl::StrCat(what, ": ", std::strerror(errno));
}

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

std::string SelfDirectory() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string self(buf, static_cast<size_t>(n));
  size_t slash = self.rfind('/');
  return slash == std::string::npos ? "" : self.substr(0, slash);
}

// Removes the archive's temporary file on every path out.
class TempFile {
 public:
  TempFile() = default;
  ~TempFile() {
    if (!path_.empty()) unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  absl::Status Write(const std::string& dir, absl::string_view data) {
    std::string templ = absl::StrCat(dir, "/fedge-model-check-XXXXXX");
    // mkostemp creates the file 0600; O_CLOEXEC keeps it out of any other process spawned now.
    int fd = mkostemp(templ.data(), O_CLOEXEC);
    if (fd < 0) return absl::InternalError(ErrnoText(absl::StrCat("creating a file in ", dir)));
    path_ = templ;
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = write(fd, data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        absl::Status st = absl::InternalError(ErrnoText(absl::StrCat("writing ", path_)));
        close(fd);
        return st;
      }
      done += static_cast<size_t>(n);
    }
    if (close(fd) != 0) return absl::InternalError(ErrnoText(absl::StrCat("closing ", path_)));
    return absl::OkStatus();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int* out() { return &fd_; }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

std::string SignalText(int sig) {
  const char* name = strsignal(sig);
  return name == nullptr ? absl::StrCat("signal ", sig) : absl::StrCat("signal ", sig, ", ", name);
}

absl::Status MapExit(int wait_status, const std::string& output, const SandboxLimits& limits) {
  const std::string message(absl::StripAsciiWhitespace(output));
  if (WIFEXITED(wait_status)) {
    switch (WEXITSTATUS(wait_status)) {
      case kModelCheckOk:
        return absl::OkStatus();
      case kModelCheckRefused:
        return absl::InvalidArgumentError(message);
      case kModelCheckOutOfMemory:
        return absl::InvalidArgumentError(
            absl::StrCat("the archive exceeded the model check's memory limit of ",
                         limits.memory_mb, " MB: ", message));
      case kModelCheckUsage:
        return absl::InternalError(
            absl::StrCat("fedge-model-check refused its arguments: ", message));
      default:
        return absl::InvalidArgumentError(absl::StrCat("the model check failed (exit ",
                                                       WEXITSTATUS(wait_status), "): ", message));
    }
  }
  if (WIFSIGNALED(wait_status)) {
    const int sig = WTERMSIG(wait_status);
    if (sig == SIGXCPU) {
      return absl::InvalidArgumentError(
          absl::StrCat("the archive exceeded the model check's CPU limit of ", limits.cpu_seconds,
                       " s (", SignalText(sig), ")"));
    }
    if (sig == SIGKILL) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the model check was killed (", SignalText(sig), "): the archive hit its CPU limit of ",
          limits.cpu_seconds, " s or its memory limit of ", limits.memory_mb, " MB"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("the archive crashed the model check (", SignalText(sig), ")"));
  }
  return absl::InternalError(
      absl::StrCat("fedge-model-check ended with wait status ", wait_status));
}

}  // namespace

absl::StatusOr<std::string> FindModelCheckHelper(const std::string& helper_path) {
  if (!helper_path.empty()) {
    if (IsExecutableFile(helper_path)) return helper_path;
    return absl::FailedPreconditionError(absl::StrCat(
        "the model check helper ", helper_path,
        " is not an executable file; install fedge-model-check (it ships with fedge-cloud) or "
        "fix --model_check_path"));
  }
  std::vector<std::string> tried;
  const std::string self_dir = SelfDirectory();
  if (!self_dir.empty()) tried.push_back(absl::StrCat(self_dir, "/", kModelCheckBinary));
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
      tried.push_back(absl::StrCat(dir, "/", kModelCheckBinary));
    }
  }
  for (const std::string& candidate : tried) {
    if (IsExecutableFile(candidate)) return candidate;
  }
  return absl::FailedPreconditionError(absl::StrCat(
      kModelCheckBinary, " not found beside this binary (",
      self_dir.empty() ? "unknown directory" : self_dir,
      ") or on PATH; install it next to fedge-cloud (the fedge-cloud package ships it) or set "
      "--model_check_path"));
}

namespace {

// The helpers running now, by process id, so that a shutdown can end them at once.
std::mutex& RunningMu() {
  static std::mutex mu;
  return mu;
}
std::set<pid_t>& Running() {
  static std::set<pid_t> pids;
  return pids;
}

std::string TempDirOf(const SandboxLimits& limits) {
  if (!limits.temp_dir.empty()) return limits.temp_dir;
  const char* tmp = std::getenv("TMPDIR");
  return (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
}

// Runs fedge-model-check on the archive in `file` with `extra` arguments under `limits`, and
// returns its stdout when it exits 0 (else the status MapExit gives).
absl::StatusOr<std::string> RunHelper(const TempFile& file, int features, int labels,
                                      const std::vector<std::string>& extra,
                                      const SandboxLimits& limits) {
  auto helper = FindModelCheckHelper(limits.helper_path);
  if (!helper.ok()) return helper.status();

  Fd read_end, write_end;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError(ErrnoText("pipe2"));
  *read_end.out() = fds[0];
  *write_end.out() = fds[1];

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  // Default dispositions (the coordinator ignores SIGPIPE), nothing blocked, and a process group
  // of its own so a timeout kills anything the helper started.
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);

  std::vector<std::string> args = {
      *helper,
      absl::StrCat("--archive=", file.path()),
      absl::StrCat("--features=", features),
      absl::StrCat("--labels=", labels),
      absl::StrCat("--memory_mb=", limits.memory_mb),
      absl::StrCat("--cpu_s=", limits.cpu_seconds),
  };
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<std::string> env = {
      "PATH=/usr/bin:/bin",     "LC_ALL=C", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1",
      "OPENBLAS_NUM_THREADS=1",
  };
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = -1;
  int spawn_error;
  {
    std::lock_guard<std::mutex> lock(RunningMu());
    spawn_error = posix_spawn(&pid, helper->c_str(), &actions, &attr, argv.data(), envp.data());
    if (spawn_error == 0) Running().insert(pid);
  }
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (spawn_error != 0) {
    return absl::InternalError(
        absl::StrCat("starting ", *helper, ": ", std::strerror(spawn_error)));
  }
  write_end.Reset();  // the helper holds the only write end now: EOF means it is gone

  const absl::Time deadline = absl::Now() + limits.timeout;
  std::string output;
  bool timed_out = false;
  bool eof = false;
  while (!eof) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      timed_out = true;
      break;
    }
    pollfd p = {read_end.get(), POLLIN, 0};
    const int ms = static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1000));
    int r = poll(&p, 1, ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;  // cannot watch the pipe: fall through to waiting on the process
    if (r == 0) continue;
    char buf[4096];
    ssize_t n = read(read_end.get(), buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      eof = true;
      break;
    }
    if (output.size() < kMaxOutput) {
      output.append(buf, std::min(static_cast<size_t>(n), kMaxOutput - output.size()));
    }
  }
  int wait_status = 0;
  while (!timed_out) {
    pid_t w = waitpid(pid, &wait_status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      std::lock_guard<std::mutex> lock(RunningMu());
      Running().erase(pid);
      return absl::InternalError(ErrnoText("waiting for fedge-model-check"));
    }
    if (absl::Now() >= deadline) {
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (timed_out) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while (waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
    }
  }
  {
    std::lock_guard<std::mutex> lock(RunningMu());
    Running().erase(pid);
  }
  if (timed_out) {
    return absl::InvalidArgumentError(
        absl::StrCat("model check timed out after ", absl::FormatDuration(limits.timeout),
                     " (killed); the archive took too long to load and run"));
  }
  FEDGE_RETURN_IF_ERROR(MapExit(wait_status, output, limits));
  return output;
}

}  // namespace

absl::Status CheckArchiveLimits(absl::string_view archive, const SandboxLimits& limits) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* source = zip_source_buffer_create(archive.data(), archive.size(), 0, &error);
  if (source == nullptr) {
    zip_error_fini(&error);
    return absl::InternalError("cannot read the archive's directory");
  }
  zip_t* zip = zip_open_from_source(source, ZIP_RDONLY, &error);
  if (zip == nullptr) {
    zip_source_free(source);
    const std::string why = zip_error_strerror(&error);
    zip_error_fini(&error);
    return absl::InvalidArgumentError(
        absl::StrCat("the archive is not a TorchScript archive (a torch.jit.save zip): ", why));
  }
  zip_error_fini(&error);
  const zip_int64_t entries = zip_get_num_entries(zip, 0);
  absl::Status st;
  if (entries < 0 || entries > limits.max_entries) {
    st = absl::InvalidArgumentError(
        absl::StrCat("the archive holds ", entries, " entries; at most ", limits.max_entries));
  }
  // A TorchScript archive stores its tensors uncompressed, so it unpacks to about its own size;
  // far more is a zip bomb.
  const uint64_t cap = std::min<uint64_t>(
      static_cast<uint64_t>(limits.max_unpacked_mb) << 20,
      static_cast<uint64_t>(archive.size()) * kMaxUnpackRatio + (uint64_t{64} << 20));
  uint64_t total = 0;
  for (zip_int64_t i = 0; st.ok() && i < entries; ++i) {
    zip_stat_t entry;
    zip_stat_init(&entry);
    if (zip_stat_index(zip, static_cast<zip_uint64_t>(i), 0, &entry) != 0 ||
        (entry.valid & ZIP_STAT_SIZE) == 0) {
      st = absl::InvalidArgumentError(absl::StrCat("the archive's entry ", i, " is unreadable"));
      break;
    }
    total += entry.size;
    if (total > cap) {
      st = absl::InvalidArgumentError(
          absl::StrCat("the archive (", archive.size(), " bytes) unpacks to more than ", cap,
                       " bytes: a TorchScript archive unpacks to about its own size, and at most ",
                       limits.max_unpacked_mb, " MB (--model_check_max_unpacked_mb)"));
    }
  }
  zip_close(zip);  // frees the source too
  return st;
}

absl::Status CheckArchiveInSandbox(absl::string_view archive, absl::string_view expected_sha256_hex,
                                   int features, int labels, const SandboxLimits& limits) {
  if (!expected_sha256_hex.empty()) {
    const std::string actual = Sha256Hex(archive);
    if (actual != expected_sha256_hex) {
      return absl::InvalidArgumentError(absl::StrCat("the archive's sha256 is ", actual, " but ",
                                                     expected_sha256_hex, " was expected"));
    }
  }
  FEDGE_RETURN_IF_ERROR(CheckArchiveLimits(archive, limits));
  TempFile file;
  FEDGE_RETURN_IF_ERROR(file.Write(TempDirOf(limits), archive));
  return RunHelper(file, features, labels, {}, limits).status();
}

absl::StatusOr<SandboxScore> EvaluateArchiveInSandbox(absl::string_view archive,
                                                      const std::string& holdout_csv, int features,
                                                      int labels, const SandboxLimits& limits) {
  TempFile file;
  FEDGE_RETURN_IF_ERROR(file.Write(TempDirOf(limits), archive));
  TempFile data;
  FEDGE_RETURN_IF_ERROR(data.Write(TempDirOf(limits), holdout_csv));
  FEDGE_ASSIGN_OR_RETURN(
      std::string out,
      RunHelper(file, features, labels, {absl::StrCat("--evaluate=", data.path())}, limits));
  // "ok accuracy=A loss=L samples=N"
  SandboxScore score;
  bool have[3] = {false, false, false};
  for (absl::string_view word : absl::StrSplit(absl::StripAsciiWhitespace(out), ' ')) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(word, '=');
    if (kv.first == "accuracy") have[0] = absl::SimpleAtod(kv.second, &score.accuracy);
    if (kv.first == "loss") have[1] = absl::SimpleAtod(kv.second, &score.loss);
    if (kv.first == "samples") have[2] = absl::SimpleAtoi(kv.second, &score.num_samples);
  }
  if (!have[0] || !have[1] || !have[2]) {
    return absl::InternalError(
        absl::StrCat("fedge-model-check answered ", out.substr(0, 200), " instead of a score"));
  }
  return score;
}

int KillRunningModelChecks() {
  std::lock_guard<std::mutex> lock(RunningMu());
  for (pid_t pid : Running()) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
  }
  return static_cast<int>(Running().size());
}

}  // namespace fedge::cloud::models
