#include "common/net/connection_gate.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace fedge::net {
namespace {

// Descriptors kept back from max_connections for everything else: files, the databases,
// outgoing connections, the metrics and REST listeners.
constexpr int kReservedFds = 256;

std::string PeerAddress(const sockaddr_storage& addr) {
  char host[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&addr)->sin_addr, host,
                sizeof(host));
  } else if (addr.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_addr, host,
                sizeof(host));
  }
  return host;
}

ino_t InodeOf(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

}  // namespace

int64_t RaiseOpenFileLimit() {
  rlimit lim;
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return -1;
  if (lim.rlim_cur < lim.rlim_max) {
    const rlim_t before = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) == 0) {
      LOG(INFO) << "open-file limit raised from " << before << " to " << lim.rlim_cur;
    } else {
      LOG(WARNING) << "cannot raise the open-file limit from " << before << ": "
                   << std::strerror(errno);
      lim.rlim_cur = before;
    }
  }
  return lim.rlim_cur == RLIM_INFINITY ? std::numeric_limits<int64_t>::max()
                                       : static_cast<int64_t>(lim.rlim_cur);
}

absl::StatusOr<std::unique_ptr<ConnectionGate>> ConnectionGate::Listen(const std::string& host,
                                                                       int port,
                                                                       ConnectionLimits limits,
                                                                       OnRefused on_refused) {
  std::unique_ptr<ConnectionGate> gate(new ConnectionGate);
  gate->on_refused_ = std::move(on_refused);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string bind_host = host == "[::]" ? "::" : host;
  const std::string service = absl::StrCat(port);
  if (int rc = ::getaddrinfo(bind_host.empty() ? nullptr : bind_host.c_str(), service.c_str(),
                             &hints, &res);
      rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", host, ":", port, ": ", ::gai_strerror(rc)));
  }
  int fd = -1;
  std::string why;
  for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ai->ai_family == AF_INET6) {
      const int zero = 0;  // "::" takes IPv4 too
      ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    }
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 1024) != 0) {
      why = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", host, ":", port, ": ", why,
                                               " (in use, or not a local address?)"));
  }
  gate->listen_fd_ = fd;
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  gate->port_ =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  if (::pipe2(gate->wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  gate->reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  rlimit lim;
  int64_t fds = 1024;
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    fds = lim.rlim_cur == RLIM_INFINITY ? (1 << 20) : static_cast<int64_t>(lim.rlim_cur);
  }
  const int derived = static_cast<int>(std::clamp<int64_t>(fds - kReservedFds, 16, 1 << 20));
  gate->max_connections_ =
      limits.max_connections > 0 ? std::min(limits.max_connections, derived) : derived;
  gate->per_address_ = limits.per_address;
  return gate;
}

void ConnectionGate::Start(Handler handler) {
  handler_ = std::move(handler);
  thread_ = std::thread([this] { Loop(); });
}

void ConnectionGate::Stop() {
  if (stop_.exchange(true)) return;
  if (wake_[1] >= 0) {
    const char c = 0;
    (void)!::write(wake_[1], &c, 1);
  }
  if (thread_.joinable()) thread_.join();
  for (int* fd : {&listen_fd_, &wake_[0], &wake_[1], &reserve_fd_}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
}

ConnectionGate::~ConnectionGate() { Stop(); }

int ConnectionGate::open() const {
  MutexLock lock(&mu_);
  return static_cast<int>(conns_.size());
}

void ConnectionGate::Loop() {
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
  while (!stop_.load()) {
    // Level-triggered: a connection left in the backlog is seen again on the next turn.
    const int n = ::poll(fds, 2, 1000);
    if (stop_.load()) break;
    if (n <= 0) {
      MutexLock lock(&mu_);
      SweepLocked();
      continue;
    }
    if (fds[0].revents & POLLIN) {
      for (int i = 0; i < 64 && !stop_.load(); ++i) AcceptOne();
    }
  }
}

void ConnectionGate::AcceptOne() {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  int fd =
      ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno == EMFILE || errno == ENFILE) {
      // Out of descriptors: spend the reserved one to take the connection off the backlog and
      // close it, so the listener never stalls behind it.
      if (reserve_fd_ >= 0) {
        ::close(reserve_fd_);
        reserve_fd_ = -1;
      }
      int dropped = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (dropped >= 0) ::close(dropped);
      reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      LOG_EVERY_N(WARNING, 100) << "the process is out of open files (" << std::strerror(errno)
                                << "): new connections are closed until some end";
      if (on_refused_) on_refused_("fd_limit");
      MutexLock lock(&mu_);
      SweepLocked();
    }
    return;  // EAGAIN: the backlog is empty
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const std::string address = PeerAddress(addr);
  {
    MutexLock lock(&mu_);
    // A descriptor number seen before now names this new socket: the old one is gone.
    auto stale = conns_.find(fd);
    if (stale != conns_.end()) {
      if (--per_address_count_[stale->second.address] <= 0) {
        per_address_count_.erase(stale->second.address);
      }
      conns_.erase(stale);
    }
    if (static_cast<int>(conns_.size()) >= max_connections_) SweepLocked();
    if (static_cast<int>(conns_.size()) >= max_connections_) {
      ::close(fd);
      LOG_EVERY_N(WARNING, 100) << "connection from " << address << " refused: " << max_connections_
                                << " connections are open";
      if (on_refused_) on_refused_("total");
      return;
    }
    if (per_address_ > 0 && per_address_count_[address] >= per_address_) {
      SweepLocked();
      if (per_address_count_[address] >= per_address_) {
        CloseOldestOfLocked(address);
        LOG_EVERY_N(WARNING, 100) << address << " holds " << per_address_
                                  << " connections, its limit: its oldest was closed";
        if (on_refused_) on_refused_("per_address");
      }
    }
    conns_[fd] = Conn{InodeOf(fd), address, next_seq_++};
    ++per_address_count_[address];
  }
  handler_(listen_fd_, fd);
}

void ConnectionGate::SweepLocked() {
  for (auto it = conns_.begin(); it != conns_.end();) {
    if (InodeOf(it->first) != it->second.inode) {
      if (--per_address_count_[it->second.address] <= 0) {
        per_address_count_.erase(it->second.address);
      }
      conns_.erase(it++);
    } else {
      ++it;
    }
  }
}

void ConnectionGate::CloseOldestOfLocked(const std::string& address) {
  auto oldest = conns_.end();
  for (auto it = conns_.begin(); it != conns_.end(); ++it) {
    if (it->second.address == address &&
        (oldest == conns_.end() || it->second.seq < oldest->second.seq)) {
      oldest = it;
    }
  }
  if (oldest == conns_.end()) return;
  // The server owns the descriptor: shutting the socket down makes it see the peer gone and
  // close it. Checked again just before, so that a reused number is never touched.
  if (InodeOf(oldest->first) == oldest->second.inode) ::shutdown(oldest->first, SHUT_RDWR);
  if (--per_address_count_[address] <= 0) per_address_count_.erase(address);
  conns_.erase(oldest);
}

}  // namespace fedge::net
