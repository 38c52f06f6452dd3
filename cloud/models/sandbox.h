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
};

// The helper's name, as installed beside fedge-cloud.
inline constexpr char kModelCheckBinary[] = "fedge-model-check";

// Checks a user-supplied TorchScript archive without loading it in this process:
//  1. its SHA-256 against `expected_sha256_hex` (lowercase hex; empty: not checked), before
//     any process starts;
//  2. then fedge-model-check, started with posix_spawn (exec, no fork of this threaded process)
//     with stdin on /dev/null, no other inherited descriptors, a clean environment, its own
//     process group and the rlimits of `limits`, loads it and runs a [1, features] input
//     through it, expecting [1, labels] out.
// OK when the helper accepts the archive. INVALID_ARGUMENT for a digest mismatch, an archive the
// helper refuses (its message), a helper killed by a signal or a limit, or one still running
// after `limits.timeout` (killed and reaped). FAILED_PRECONDITION if the helper is not installed.
// INTERNAL for local failures (temp file, spawn). Thread-safe; blocks for the helper's run.
absl::Status CheckArchiveInSandbox(absl::string_view archive, absl::string_view expected_sha256_hex,
                                   int features, int labels, const SandboxLimits& limits);

// The helper CheckArchiveInSandbox would run, or FAILED_PRECONDITION naming where it looked.
absl::StatusOr<std::string> FindModelCheckHelper(const std::string& helper_path);

}  // namespace fedge::cloud::models

#endif  // FEDGE_CLOUD_MODELS_SANDBOX_H_
