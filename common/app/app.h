#ifndef FEDGE_COMMON_APP_APP_H_
#define FEDGE_COMMON_APP_APP_H_

#include <string>
#include <vector>

namespace fedge::app {

// Sets --help to list fedge's flags (not Abseil's own), sets the usage text and parses the
// command line (absl flags). Returns the positional arguments. A usage flag (--help,
// --helpfull, --version, --only_check_args) prints what it asks for and exits 0; an unknown or
// malformed flag exits 1. For tools and benchmarks that need no more start-up than that.
std::vector<char*> ParseFlags(int argc, char** argv, const std::string& usage);

// Start-up shared by every fedge server binary: sets --help to list fedge's flags, parses the
// command line (absl flags), sends glog to stderr (a read-only root has no /tmp for log
// files) at the verbosity of --v, and blocks SIGTERM and SIGINT in every thread so that
// WaitForTermination() can receive them. Returns the positional arguments.
std::vector<char*> Init(int argc, char** argv, const std::string& usage);

// Blocks until SIGTERM or SIGINT arrives; returns the signal number.
int WaitForTermination();

// Writes `content` to path atomically (temporary file, then rename).
bool WriteFileAtomically(const std::string& path, const std::string& content);

}  // namespace fedge::app

#endif  // FEDGE_COMMON_APP_APP_H_
