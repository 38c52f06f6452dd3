#ifndef FEDGE_CLOUD_MODELS_SANDBOX_H_
#define FEDGE_CLOUD_MODELS_SANDBOX_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fedge::cloud::models {

// How a user's archive is tried before the coordinator loads it itself.
struct SandboxLimits {
  // The fedge-model-check binary. Empty: the one beside the running binary (/proc/self/exe's
  // directory), then the first on PATH.
  std::string helper_path;
  // Where the archive is written for the helper (a private 0600 file, removed afterwards).
  // Empty: $TMPDIR, else /tmp.
  std::string temp_dir;
  int64_t memory_mb = 2048;                     // the helper's address space (RLIMIT_AS)
  int64_t cpu_seconds = 60;                     // the helper's CPU time (RLIMIT_CPU)
  absl::Duration timeout = absl::Seconds(120);  // wall clock, then SIGKILL
  // The archive's zip directory, read before any process starts: its entry count, and what
  // its entries unpack to (at most this, and at most kMaxUnpackRatio times the archive plus
  // 64 MiB).
  int64_t max_entries = 10000;
  int64_t max_unpacked_mb = 4096;
};

// TorchScript archives store tensors uncompressed: a legitimate one unpacks to about its size.
inline constexpr uint64_t kMaxUnpackRatio = 4;

// The helper's name, as installed beside fedge-cloud.
inline constexpr char kModelCheckBinary[] = "fedge-model-check";

// Checks a user-supplied TorchScript archive without loading it in this process:
//  1. its SHA-256 against `expected_sha256_hex` (lowercase hex; empty: not checked), before
//     any process starts;
//  2. its zip directory against the limits' entry count and unpacked size (CheckArchiveLimits);
//  3. then fedge-model-check, started with posix_spawn (exec, no fork of this threaded process)
//     with stdin on /dev/null, no other inherited descriptors, a clean environment, its own
//     process group and the rlimits of `limits`, loads it and runs it the way the coordinator
//     and the edges will: predictions at batch sizes 1, 2, 32 and the evaluation chunk,
//     [N, features] in and [N, labels] out; an evaluation; and a training step on a copy.
// OK when the helper accepts the archive. INVALID_ARGUMENT for a digest mismatch, an archive the
// helper refuses (its message), a helper killed by a signal or a limit, or one still running
// after `limits.timeout` (killed and reaped). FAILED_PRECONDITION if the helper is not installed.
// INTERNAL for local failures (temp file, spawn). Thread-safe; blocks for the helper's run.
absl::Status CheckArchiveInSandbox(absl::string_view archive, absl::string_view expected_sha256_hex,
                                   int features, int labels, const SandboxLimits& limits);

// OK if the archive's zip directory is within the limits' entry count and unpacked size;
// INVALID_ARGUMENT naming the limit otherwise, or if it is not a zip archive. Reads only the
// directory: nothing is unpacked.
absl::Status CheckArchiveLimits(absl::string_view archive, const SandboxLimits& limits);

// A score from EvaluateArchiveInSandbox.
struct SandboxScore {
  double accuracy = 0;
  double loss = 0;  // mean cross-entropy
  int64_t num_samples = 0;
};

// Scores a user's archive on a holdout in fedge-model-check, under the same limits and kill on
// timeout as the check: the coordinator never runs a user's model code in its own process.
// `holdout_csv` has a header of the feature names and a "label" column of class indices.
// Errors as CheckArchiveInSandbox's.
absl::StatusOr<SandboxScore> EvaluateArchiveInSandbox(absl::string_view archive,
                                                      const std::string& holdout_csv, int features,
                                                      int labels, const SandboxLimits& limits);

// Kills every helper running now (a shutdown must not wait for them); their callers get an
// error. Returns how many there were.
int KillRunningModelChecks();

// The helper CheckArchiveInSandbox would run, or FAILED_PRECONDITION naming where it looked.
absl::StatusOr<std::string> FindModelCheckHelper(const std::string& helper_path);

}  // namespace fedge::cloud::models

#endif  // FEDGE_CLOUD_MODELS_SANDBOX_H_
