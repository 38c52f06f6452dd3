#ifndef FEDGE_EDGE_AGENT_DOWNLOADER_H_
#define FEDGE_EDGE_AGENT_DOWNLOADER_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "edge/runtime/runtime.h"
#include "fedge/v1/fleet.grpc.pb.h"

namespace fedge::edge::agent {

// Fetches artifacts by digest into the runtime's cache. A cached artifact is used as is (its
// digest is checked on read). Otherwise it is downloaded in chunks into `<cache>/<sha>.part`,
// which persists across broken streams and restarts: each attempt asks for the bytes after
// what the part already holds. The whole is checked against its digest; a corrupted result is
// discarded and fetched again from the start. Runs on the agent's worker, never on a serving
// thread.
class Downloader {
 public:
  struct Options {
    v1::Fleet::StubInterface* stub = nullptr;
    std::string node_id;
    runtime::Runtime* runtime = nullptr;
    absl::Duration rpc_timeout = absl::Seconds(120);
    int max_attempts = 8;
    absl::Duration initial_backoff = absl::Milliseconds(200);
    absl::Duration max_backoff = absl::Seconds(5);
    // Polled between attempts: true ends the download early (the agent is stopping).
    std::function<bool()> stopping;
  };
  explicit Downloader(Options options) : options_(std::move(options)) {}

  // The artifact's bytes. *downloaded counts the bytes this call fetched over the network.
  absl::StatusOr<std::string> Fetch(const std::string& sha256, int64_t* downloaded);

 private:
  const Options options_;
};

}  // namespace fedge::edge::agent

#endif  // FEDGE_EDGE_AGENT_DOWNLOADER_H_
