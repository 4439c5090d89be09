// connectTcpStore and rendezvous::connect in one process, as c10d's own TCPStore tests do:
// 127.0.0.1, port 0, short timeouts, the exact error texts.
#include "runtime/rendezvous/tcp_store.h"

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "runtime/rendezvous/rendezvous.h"

namespace ddp::rendezvous {
namespace {

using namespace std::chrono_literals;

// A port that nothing listens on: bound, then closed.
std::uint16_t closedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

TEST(TcpStoreTest, MasterOnPortZeroServesAClient) {
  auto master = connectTcpStore(
      {.masterAddr = "127.0.0.1", .masterPort = 0, .rank = 0, .worldSize = 2, .timeout = 5s});
  const auto port = static_cast<std::uint16_t>(master->getPort());
  ASSERT_GT(port, 0);
  auto client = connectTcpStore(
      {.masterAddr = "127.0.0.1", .masterPort = port, .rank = 1, .worldSize = 2, .timeout = 5s});
  client->set("key", std::vector<uint8_t>{1, 2, 3});
  EXPECT_EQ(master->get("key"), (std::vector<uint8_t>{1, 2, 3}));
}

TEST(TcpStoreTest, ClientGivesUpAfterItsTimeoutNamingTheMasterAndTheCause) {
  const auto port = closedPort();
  const auto start = std::chrono::steady_clock::now();
  try {
    connectTcpStore({.masterAddr = "127.0.0.1",
                     .masterPort = port,
                     .rank = 1,
                     .worldSize = 2,
                     .timeout = 400ms});
    FAIL() << "expected a RendezvousError";
  } catch (const RendezvousError& e) {
    const std::string what = e.what();
    const auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_GE(elapsed, 400ms);
    EXPECT_LT(elapsed, 3s) << "the timeout is kept";
    EXPECT_EQ(what.rfind("rendezvous timed out after 0.", 0), 0u) << what;
    EXPECT_NE(
        what.find("rank 1 could not reach the master's store at 127.0.0.1:" + std::to_string(port)),
        std::string::npos)
        << what;
    EXPECT_NE(what.find("last: Connection refused (nothing listens on the port yet))"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("---> HINT: likely causes:"), std::string::npos) << what;
    EXPECT_EQ(exitCodeFor(e), kExitTransient);
  }
}

TEST(TcpStoreTest, MasterOnATakenPortSaysSo) {
  auto first = connectTcpStore({.masterPort = 0, .rank = 0, .worldSize = 1, .timeout = 2s});
  const auto port = static_cast<std::uint16_t>(first->getPort());
  try {
    connectTcpStore({.masterPort = port, .rank = 0, .worldSize = 1, .timeout = 2s});
    FAIL() << "expected a RendezvousError";
  } catch (const RendezvousError& e) {
    const std::string what = e.what();
    EXPECT_EQ(
        what.rfind(
            "rank 0 could not host the rendezvous store on port " + std::to_string(port) + ": ", 0),
        0u)
        << what;
    EXPECT_NE(what.find("another process (an earlier run?) may hold the port"), std::string::npos)
        << what;
  }
}

TEST(TcpStoreTest, ProbeNamesAHostThatDoesNotResolve) {
  EXPECT_EQ(probeTcp("no-such-host.invalid", 1, 200ms)
                .rfind("host name 'no-such-host.invalid' does not resolve (", 0),
            0u);
  EXPECT_EQ(probeTcp("127.0.0.1", closedPort(), 200ms),
            "Connection refused (nothing listens on the port yet)");
}

TEST(RendezvousConnectTest, ALoneProcessWithoutAPortTakesAFreeOneAndKeepsItsEnv) {
  env::ClusterEnv lone;
  lone.masterAddr = "127.0.0.1";
  const auto before = lone.masterPort;
  const auto rendezvous = connect(lone, {.timeout = 2s});
  EXPECT_EQ(rendezvous.master.origin, "free port");
  EXPECT_NE(rendezvous.master.port, 0);
  EXPECT_EQ(rendezvous.master.host, "127.0.0.1");
  EXPECT_EQ(lone.masterPort, before) << "the ClusterEnv is only read";
  EXPECT_FALSE(rendezvous.mpi);
}

TEST(RendezvousConnectTest, TwoRanksMeetOnThePortTheEnvironmentNames) {
  const auto port = closedPort();
  env::ClusterEnv rank0, rank1;
  rank0.masterAddr = rank1.masterAddr = "127.0.0.1";
  rank0.masterPort = rank1.masterPort = port;
  rank0.masterPortFromEnvironment = rank1.masterPortFromEnvironment = true;
  rank0.worldSize = rank1.worldSize = 2;
  rank1.rank = 1;
  Rendezvous second;
  std::thread late([&] {
    std::this_thread::sleep_for(200ms);  // the master comes up after the worker
    auto first = connect(rank0, {.timeout = 5s});
    first.store->set("from0", std::vector<uint8_t>{7});
    std::this_thread::sleep_for(500ms);
  });
  second = connect(rank1, {.timeout = 5s});
  EXPECT_EQ(second.master.port, port);
  EXPECT_EQ(second.master.origin, "environment");
  EXPECT_EQ(second.store->get("from0"), (std::vector<uint8_t>{7}));
  late.join();
}

}  // namespace
}  // namespace ddp::rendezvous
