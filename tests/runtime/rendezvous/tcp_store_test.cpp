// connectTcpStore and rendezvous::connect in one process, as c10d's own TCPStore tests do:
// 127.0.0.1, port 0, short timeouts, the exact error texts.
#include "runtime/rendezvous/tcp_store.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
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

// The addresses sockets in LISTEN state on `port` are bound to ("127.0.0.1", "::", ...),
// from /proc/net/tcp and /proc/net/tcp6: what `ss -ltn` shows.
std::set<std::string> listenersOn(std::uint16_t port) {
  std::set<std::string> addresses;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state;
      fields >> slot >> local >> remote >> state;
      const auto colon = local.find(':');
      if (state != "0A" || std::stoul(local.substr(colon + 1), nullptr, 16) != port) continue;
      // The address as the kernel holds it, 32-bit words printed in host byte order.
      const auto hex = local.substr(0, colon);
      char text[INET6_ADDRSTRLEN] = {};
      if (hex.size() == 8) {
        in_addr address{static_cast<in_addr_t>(std::stoul(hex, nullptr, 16))};
        inet_ntop(AF_INET, &address, text, sizeof(text));
      } else {
        in6_addr address{};
        for (int word = 0; word < 4; ++word) {
          const auto value =
              static_cast<std::uint32_t>(std::stoul(hex.substr(word * 8, 8), nullptr, 16));
          std::memcpy(&address.s6_addr[word * 4], &value, 4);
        }
        inet_ntop(AF_INET6, &address, text, sizeof(text));
      }
      addresses.insert(text);
    }
  }
  return addresses;
}

// Note [Where the store listens] in tcp_store.h: on the master address when it is this host's
// (loopback for --standalone), not on every interface. 127.0.0.2 is loopback too, and shows
// that the address comes from masterAddr.
class StoreBindTest : public ::testing::TestWithParam<std::string> {};

TEST_P(StoreBindTest, MasterListensOnTheMasterAddressOnlyAndServesAClient) {
  const auto& address = GetParam();
  auto master = connectTcpStore(
      {.masterAddr = address, .masterPort = 0, .rank = 0, .worldSize = 2, .timeout = 5s});
  const auto port = static_cast<std::uint16_t>(master->getPort());
  ASSERT_GT(port, 0);
  EXPECT_EQ(listenersOn(port), std::set<std::string>{address});
  auto client = connectTcpStore(
      {.masterAddr = address, .masterPort = port, .rank = 1, .worldSize = 2, .timeout = 5s});
  client->set("key", std::vector<uint8_t>{1, 2, 3});
  EXPECT_EQ(master->get("key"), (std::vector<uint8_t>{1, 2, 3}));
}

INSTANTIATE_TEST_SUITE_P(Loopback, StoreBindTest, ::testing::Values("127.0.0.1", "127.0.0.2"));

TEST(TcpStoreTest, AMasterAddressOfAnotherHostFallsBackToEveryInterfaceAndSaysWhy) {
  // 198.51.100.1 (TEST-NET-2, RFC 5737) is no address of this host: the bind is refused
  // (EADDRNOTAVAIL) and no packet is sent. A Kubernetes Service's cluster IP is such a case.
  ::testing::internal::CaptureStderr();
  auto master = connectTcpStore(
      {.masterAddr = "198.51.100.1", .masterPort = 0, .rank = 0, .worldSize = 1, .timeout = 5s});
  const auto log = ::testing::internal::GetCapturedStderr();
  const auto port = static_cast<std::uint16_t>(master->getPort());
  const auto listeners = listenersOn(port);
  EXPECT_TRUE(listeners == std::set<std::string>{"::"} ||
              listeners == std::set<std::string>{"0.0.0.0"})
      << *listeners.begin();
  EXPECT_NE(log.find("event=store_bind_all_interfaces reason=\"198.51.100.1 is not an address "
                     "of this host"),
            std::string::npos)
      << log;
  master->set("key", std::vector<uint8_t>{4});  // rank 0 reaches its own store over loopback
  EXPECT_EQ(master->get("key"), (std::vector<uint8_t>{4}));
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
