// The connection gate in front of a real gRPC server on loopback: a flood from one address
// cannot lock others out, a full gate refuses new connections without stalling, and the
// listener serves again as soon as connections end.

#include "common/net/connection_gate.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/net/servers.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"

namespace fedge::net {
namespace {

// A plain TCP connection from `from` (a loopback address) that sends nothing.
int Dial(int port, const char* from = "127.0.0.1") {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, from, &local.sin_addr);
  ::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// True once a fresh channel from `from` reaches READY: the server accepted it and finished
// the HTTP/2 handshake.
bool Connects(int port) {
  grpc::ChannelArguments args;
  args.SetInt("grpc.use_local_subchannel_pool", 1);
  auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                           grpc::InsecureChannelCredentials(), args);
  return channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10));
}

// True if the server closes the connection within `timeout_ms` (whatever it sent first, such as
// its HTTP/2 settings).
bool ClosedByServer(int fd, int timeout_ms) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[4096];
  while (true) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
}

bool WaitFor(const std::function<bool()>& done) {
  for (int i = 0; i < 500; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

TEST(ConnectionGateTest, AFloodFromOneAddressClosesItsOwnOldestNotOthers) {
  GrpcServerOptions o;
  o.connections = ConnectionLimits{0, 8};
  auto server = StartGrpcServer(o);
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<int> flood;
  for (int i = 0; i < 50; ++i) flood.push_back(Dial(server->port, "127.0.0.2"));
  EXPECT_TRUE(WaitFor([&] { return server->gate->open() <= 8; }));
  // Another address still gets in, and so does a newcomer from the flooding one.
  EXPECT_TRUE(Connects(server->port));
  const int mine = Dial(server->port, "127.0.0.2");
  ASSERT_GE(mine, 0);
  // The flood's oldest were shut down: reading them gives end of stream.
  EXPECT_TRUE(ClosedByServer(flood[0], 5000));
  for (int fd : flood) ::close(fd);
  ::close(mine);
  StopGrpcServer(&*server, std::chrono::milliseconds(100));
}

TEST(ConnectionGateTest, AFullGateRefusesAtOnceAndServesAgainWhenConnectionsEnd) {
  GrpcServerOptions o;
  o.connections = ConnectionLimits{20, 0};
  auto server = StartGrpcServer(o);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(server->gate->max_connections(), 20);
  std::vector<int> held;
  for (int i = 0; i < 60; ++i) held.push_back(Dial(server->port));
  EXPECT_TRUE(WaitFor([&] { return server->gate->open() == 20; }));
  // Those past the limit were closed at once, not left in the backlog.
  int closed = 0;
  for (int fd : held) closed += ClosedByServer(fd, 200) ? 1 : 0;
  EXPECT_EQ(closed, 40);
  for (int fd : held) ::close(fd);
  // The held ones end (the server sees them close): the listener serves again, no restart.
  EXPECT_TRUE(Connects(server->port));
  StopGrpcServer(&*server, std::chrono::milliseconds(100));
}

TEST(ConnectionGateTest, TheOpenFileSoftLimitIsRaisedToTheHardLimit) {
  rlimit lim;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  rlimit lowered = lim;
  lowered.rlim_cur = std::min<rlim_t>(lim.rlim_max, 512);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
  const int64_t now = RaiseOpenFileLimit();
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lowered), 0);
  EXPECT_EQ(lowered.rlim_cur, lim.rlim_max);
  if (lim.rlim_max != RLIM_INFINITY) EXPECT_EQ(now, static_cast<int64_t>(lim.rlim_max));
}

}  // namespace
}  // namespace fedge::net
