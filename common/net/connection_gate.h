#ifndef FEDGE_COMMON_NET_CONNECTION_GATE_H_
#define FEDGE_COMMON_NET_CONNECTION_GATE_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/sync/mutex.h"

namespace fedge::net {

// How many connections a listener takes. 0 for max_connections derives it from the process's
// open-file limit (less a reserve for everything else the process opens).
struct ConnectionLimits {
  int max_connections = 0;
  // Connections from one address; past it the address's oldest connection is closed to make
  // room, so a flood from one address cannot lock out the rest of the fleet, and an honest
  // newcomer from a flooding address still gets in. 0: no per-address limit.
  int per_address = 512;
};

// A listener that accepts TCP connections itself and hands each to a server (gRPC's external
// connection acceptor), so that the process never reaches accept4's EMFILE with connections
// queued behind it: past max_connections a new connection is closed at once; past per_address
// the address's oldest is closed; and if the file limit is reached anyway (other files), a
// reserved descriptor is given up to accept and drop the connection, so the backlog keeps
// draining and the listener recovers by itself. Connections the server has closed are noticed
// by their descriptors (fstat), at most a second late. Thread-safe; one thread accepts.
class ConnectionGate {
 public:
  // Called with each accepted, non-blocking descriptor; it owns the descriptor from then on.
  using Handler = std::function<void(int listener_fd, int fd)>;
  // Counts what the gate refused: reason "total", "per_address" or "fd_limit".
  using OnRefused = std::function<void(const char* reason)>;

  // Binds and listens on host:port (port 0 picks one). UNAVAILABLE if it cannot.
  static absl::StatusOr<std::unique_ptr<ConnectionGate>> Listen(const std::string& host, int port,
                                                                ConnectionLimits limits,
                                                                OnRefused on_refused = nullptr);
  ~ConnectionGate();
  ConnectionGate(const ConnectionGate&) = delete;
  ConnectionGate& operator=(const ConnectionGate&) = delete;

  int port() const { return port_; }
  int max_connections() const { return max_connections_; }
  // Starts accepting; each connection goes to `handler`.
  void Start(Handler handler);
  // Stops accepting and closes the listener; connections already handed over stay.
  void Stop();
  // Connections handed over and still open (as of the last sweep).
  int open() const;

 private:
  struct Conn {
    ino_t inode = 0;
    std::string address;
    uint64_t seq = 0;  // acceptance order, oldest first
  };
  ConnectionGate() = default;
  void Loop();
  void AcceptOne();
  // Forgets connections whose descriptor no longer names their socket.
  void SweepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CloseOldestOfLocked(const std::string& address) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  int reserve_fd_ = -1;
  int port_ = 0;
  int max_connections_ = 0;
  int per_address_ = 0;
  OnRefused on_refused_;
  Handler handler_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  mutable Mutex mu_;
  absl::flat_hash_map<int, Conn> conns_ ABSL_GUARDED_BY(mu_);  // by descriptor
  absl::flat_hash_map<std::string, int> per_address_count_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
};

// Raises the open-file soft limit to the hard limit (a coordinator holds a descriptor per
// connection), and returns the soft limit in force afterwards.
int64_t RaiseOpenFileLimit();

}  // namespace fedge::net

#endif  // FEDGE_COMMON_NET_CONNECTION_GATE_H_
