// The first vertical slice: N real processes on loopback rendezvous through c10d's
// TCPStore (rank 0 hosts it), build a Gloo group and check allreduce, broadcast and
// allgather value by value (collectives_worker.cpp does the checking).
#include <gtest/gtest.h>

#include <memory>

#include "tests/support/subprocess.h"

namespace ddp::testing {
namespace {

class GlooCollectivesTest : public ::testing::TestWithParam<int> {};

TEST_P(GlooCollectivesTest, EveryRankSeesEveryValue) {
  const int worldSize = GetParam();
  const auto port = std::to_string(findFreePort());
  std::vector<std::unique_ptr<ChildProcess>> ranks;
  for (int rank = 0; rank < worldSize; ++rank) {
    ranks.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{executableDir() + "/collectives_worker"},
        std::map<std::string, std::string>{{"RANK", std::to_string(rank)},
                                           {"WORLD_SIZE", std::to_string(worldSize)},
                                           {"MASTER_ADDR", "127.0.0.1"},
                                           {"MASTER_PORT", port},
                                           {"GLOO_SOCKET_IFNAME", "lo"},
                                           {"OMP_NUM_THREADS", "1"}}));
  }
  for (int rank = 0; rank < worldSize; ++rank) {
    auto result = ranks[rank]->wait(std::chrono::seconds(90));
    SCOPED_TRACE("rank " + std::to_string(rank) + " output:\n" + result.output);
    EXPECT_FALSE(result.timedOut);
    EXPECT_EQ(result.termSignal, 0);
    EXPECT_EQ(result.exitCode, 0);
    EXPECT_NE(result.output.find("rank " + std::to_string(rank) + "/" +
                                 std::to_string(worldSize) + ": all collectives verified"),
              std::string::npos);
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, GlooCollectivesTest, ::testing::Values(2, 3),
                         [](const auto& info) { return "world" + std::to_string(info.param); });

}  // namespace
}  // namespace ddp::testing
