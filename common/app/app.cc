#include "common/app/app.h"

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/internal/parse.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "glog/logging.h"

ABSL_FLAG(int, verbosity, 0, "Verbosity of debug logs (VLOG level); 0 logs INFO and above only.");
ABSL_FLAG(bool, log_color, false, "Color log lines on a terminal.");

namespace fedge::app {

std::vector<char*> ParseFlags(int argc, char** argv, const std::string& usage) {
  absl::FlagsUsageConfig config;
  // Abseil 20220623 prints "No flags matched" for --help unless it is told which files
  // hold the program's flags: every fedge source file.
  config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "fedge") || absl::StrContains(file, "main.cc") ||
           absl::StrContains(file, "app.cc") || !absl::StrContains(file, "absl/");
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage);
  // absl::ParseCommandLine() exits 1 after printing --help (Abseil 20220623, as Google's
  // internal convention has it), which scripts, packagers and users read as a failure. Parse
  // as ParseCommandLine() does, then answer the usage flags (--help, --helpfull, --version,
  // --only_check_args, ...) ourselves: a requested usage text is a success and exits 0.
  std::vector<char*> positional = absl::flags_internal::ParseCommandLineImpl(
      argc, argv, absl::flags_internal::ArgvListAction::kRemoveParsedArgs,
      absl::flags_internal::UsageFlagsAction::kIgnoreUsage,
      absl::flags_internal::OnUndefinedFlag::kAbortIfUndefined);
  if (absl::flags_internal::HandleUsageFlags(std::cout, absl::ProgramUsageMessage()) != -1) {
    std::cout.flush();
    std::exit(0);
  }
  return positional;
}

std::vector<char*> Init(int argc, char** argv, const std::string& usage) {
  std::vector<char*> positional = ParseFlags(argc, argv, usage);

  FLAGS_logtostderr = true;
  FLAGS_colorlogtostderr = absl::GetFlag(FLAGS_log_color);
  FLAGS_v = absl::GetFlag(FLAGS_verbosity);
  google::InitGoogleLogging(argv[0]);

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return positional;
}

int WaitForTermination() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

bool WriteFileAtomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return false;
    out << content;
    if (!out.flush()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace fedge::app
