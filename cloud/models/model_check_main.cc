// fedge-model-check: loads a user's TorchScript archive and runs it under its own resource
// limits, so that the coordinator never runs a user's model code itself. fedge-cloud starts it
// for every archive that RegisterModel receives, and to score user models on holdout data
// (cloud/models/sandbox.h); it is not meant to be run by hand, though it may be:
//   fedge-model-check --archive=model.pt --features=8 --labels=3
//   fedge-model-check --archive=model.pt --features=8 --labels=3 --evaluate=holdout.csv
// Exit 0 and "ok" on stdout: the archive maps [N, features] to [N, labels] at the batch sizes
// the coordinator and edges use, evaluates and takes a training step; with --evaluate, "ok
// accuracy=A loss=L samples=N" for the CSV (a "label" column of class indices). Otherwise
// stdout holds the reason and the exit code is one of cloud/models/model_check_protocol.h.
// stdout must be a pipe or terminal: with RLIMIT_FSIZE=0, writing to a regular file raises
// SIGXFSZ.

#include <sys/resource.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <new>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cloud/models/model_check_protocol.h"
#include "cloud/models/model_probe.h"
#include "common/app/app.h"
#include "common/data/dataset.h"
#include "common/torch/model.h"

ABSL_FLAG(std::string, archive, "", "The torch.jit.save archive to check.");
ABSL_FLAG(int, features, 0, "Input width the model must accept.");
ABSL_FLAG(int, labels, 0, "Output width (scores) the model must produce.");
ABSL_FLAG(int64_t, memory_mb, 2048, "Address-space limit (RLIMIT_AS) in MiB; 0: unlimited.");
ABSL_FLAG(int64_t, cpu_s, 60, "CPU-time limit (RLIMIT_CPU) in seconds; 0: unlimited.");
ABSL_FLAG(std::string, evaluate, "",
          "A CSV (feature columns, then \"label\" with class indices) to score the model on "
          "instead of trying it.");

namespace {

using fedge::cloud::models::kModelCheckOk;
using fedge::cloud::models::kModelCheckOutOfMemory;
using fedge::cloud::models::kModelCheckRefused;
using fedge::cloud::models::kModelCheckUsage;

int Report(int code, const std::string& message) {
  std::cout << message << std::endl;
  return code;
}

bool SetLimit(int resource, rlim_t soft, rlim_t hard, const char* name) {
  rlimit r{soft, hard};
  if (setrlimit(resource, &r) == 0) return true;
  std::cout << "setrlimit(" << name << "): " << std::strerror(errno) << std::endl;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  fedge::app::ParseFlags(argc, argv,
                         "fedge-model-check: tries a TorchScript archive under resource limits.\n"
                         "  fedge-model-check --archive=model.pt --features=N --labels=N");
  const std::string path = absl::GetFlag(FLAGS_archive);
  const int features = absl::GetFlag(FLAGS_features);
  const int labels = absl::GetFlag(FLAGS_labels);
  const int64_t memory_mb = absl::GetFlag(FLAGS_memory_mb);
  const int64_t cpu_s = absl::GetFlag(FLAGS_cpu_s);
  if (path.empty() || features <= 0 || labels <= 0 || memory_mb < 0 || cpu_s < 0) {
    return Report(kModelCheckUsage,
                  "fedge-model-check needs --archive, --features > 0 and --labels > 0");
  }
  // Torch's thread pools start before the limits: under a low RLIMIT_AS, pthreadpool waits
  // forever for a worker that could not start. One thread, as in every fedge test process.
  fedge::torchlib::SetNumThreads(1);
  // Limits next, before the archive is read. CPU: SIGXCPU at the soft limit, SIGKILL a second
  // later. No core dumps, and no file may be written.
  bool limited =
      SetLimit(RLIMIT_CORE, 0, 0, "RLIMIT_CORE") && SetLimit(RLIMIT_FSIZE, 0, 0, "RLIMIT_FSIZE");
  if (limited && memory_mb > 0 && fedge::cloud::models::kAddressSpaceLimitApplies) {
    const rlim_t bytes = static_cast<rlim_t>(memory_mb) << 20;
    limited = SetLimit(RLIMIT_AS, bytes, bytes, "RLIMIT_AS");
  }
  if (limited && cpu_s > 0) {
    limited = SetLimit(RLIMIT_CPU, static_cast<rlim_t>(cpu_s), static_cast<rlim_t>(cpu_s) + 1,
                       "RLIMIT_CPU");
  }
  if (!limited) return kModelCheckUsage;

  try {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Report(kModelCheckUsage, absl::StrCat("cannot open ", path));
    std::ostringstream bytes;
    bytes << in.rdbuf();
    auto model = fedge::cloud::models::LoadAndCheckArchive(bytes.str(), features, labels);
    absl::Status st = model.status();
    const std::string csv = absl::GetFlag(FLAGS_evaluate);
    if (st.ok() && !csv.empty()) {
      fedge::data::CsvOptions opt;
      auto holdout = fedge::data::ReadCsv(csv, opt);
      if (!holdout.ok()) {
        return Report(kModelCheckUsage, absl::StrCat("the holdout: ", holdout.status().message()));
      }
      auto eval = (*model)->Evaluate(*holdout);
      st = eval.status();
      if (st.ok()) {
        return Report(kModelCheckOk,
                      absl::StrFormat("ok accuracy=%.17g loss=%.17g samples=%d", eval->accuracy,
                                      eval->loss, eval->num_samples));
      }
    } else if (st.ok()) {
      st = fedge::cloud::models::TryModelAsUsed(**model, features, labels);
    }
    if (!st.ok()) {
      // The loader turns an allocation failure into a status; under RLIMIT_AS that is the limit.
      const std::string message(st.message());
      const bool oom = absl::StrContains(message, "bad_alloc") ||
                       absl::StrContains(message, "can't allocate memory");
      return Report(oom ? kModelCheckOutOfMemory : kModelCheckRefused, message);
    }
  } catch (const std::bad_alloc&) {
    return Report(kModelCheckOutOfMemory, "out of memory while loading and running the model");
  } catch (const std::exception& e) {
    return Report(kModelCheckRefused, absl::StrCat("the model check failed: ", e.what()));
  }
  return Report(kModelCheckOk, "ok");
}
