// The HTTP endpoint over real sockets on loopback.
#include "runtime/metrics/node_monitor.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <httplib.h>

namespace ddp::metrics {
namespace {

// A port free on loopback now (bound to 0, read back, closed).
int freePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

NodeMonitorOptions loopback(int port) {
  NodeMonitorOptions options;
  options.port = port;
  options.host = "127.0.0.1";
  options.trainJobProgress = false;
  return options;
}

TEST(NodeMonitorTest, ServesTheProbesAndThePageAsTheNodeChanges) {
  const int port = freePort();
  NodeMonitor monitor(loopback(port));
  ASSERT_EQ(monitor.port(), port);
  httplib::Client client("127.0.0.1", port);

  // During the rendezvous: alive, not ready.
  auto health = client.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  EXPECT_EQ(ready->body, "waiting for the rendezvous\n");

  const auto file = std::filesystem::temp_directory_path() /
                    ("ddprun-monitor-" + std::to_string(getpid()) + ".json");
  std::ofstream(file) << R"({"step": 12, "last_step_unix": 1e12, "phase": "optimizer"})";
  monitor.update([&](NodeView& node) {
    node.workers = {{3, 0, getpid(), file.string()}};
    node.worldSize = 4;
    node.rendezvousDone = true;
  });
  ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  const auto page = client.Get("/metrics");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(page->body.find("ddprun_step{rank=\"3\"} 12\n"), std::string::npos) << page->body;
  EXPECT_NE(page->body.find("ddprun_world_size 4\n"), std::string::npos);
  EXPECT_EQ(client.Get("/other")->status, 404);
  std::filesystem::remove(file);
}

TEST(NodeMonitorTest, AScraperThatNeverReadsDoesNotStopTheOthers) {
  const int port = freePort();
  NodeMonitor monitor(loopback(port));
  // A client that connects, sends half a request and stays.
  const int stuck = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  ASSERT_EQ(connect(stuck, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_GT(write(stuck, "GET /metr", 9), 0);
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(2, 0);
  const auto reply = client.Get("/healthz");
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->status, 200);
  close(stuck);
}

TEST(NodeMonitorTest, ATakenPortIsAWarningAndServesNothing) {
  const int port = freePort();
  NodeMonitor first(loopback(port));
  ASSERT_EQ(first.port(), port);
  NodeMonitor second(loopback(port));
  EXPECT_EQ(second.port(), 0);
  NodeMonitorOptions off = loopback(0);
  NodeMonitor none(off);
  EXPECT_EQ(none.port(), 0);
}

}  // namespace
}  // namespace ddp::metrics
