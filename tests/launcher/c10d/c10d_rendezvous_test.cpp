// The c10d rendezvous protocol (Note [The c10d rendezvous protocol]): several agents as
// threads of this process, each with its own client of one real TCPStore on 127.0.0.1.
#include "launcher/c10d/c10d_rendezvous.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <future>
#include <set>
#include <thread>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace ddp::launcher {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class C10dRendezvousTest : public ::testing::Test {
 protected:
  void SetUp() override {
    c10d::TCPStoreOptions options;
    options.port = 0;
    options.isServer = true;
    options.waitWorkers = false;
    options.timeout = 5s;
    server_ = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", options);
  }

  // A config with short timeouts; the test changes what it is about.
  RendezvousConfig config(int minNodes, int maxNodes, const std::string& runId = "job") {
    RendezvousConfig c;
    c.endpointHost = "127.0.0.1";
    c.endpointPort = server_->getPort();
    c.runId = runId;
    c.minNodes = minNodes;
    c.maxNodes = maxNodes;
    c.joinTimeout = 10s;
    c.lastCallTimeout = 300ms;
    c.closeTimeout = 2s;
    c.readTimeout = 5s;
    c.keepAliveInterval = 100ms;
    c.keepAliveMaxAttempt = 3;
    return c;
  }

  std::unique_ptr<C10dRendezvous> agent(const RendezvousConfig& c, bool hosting = false) {
    c10d::TCPStoreOptions options;
    options.port = server_->getPort();
    options.isServer = false;
    options.timeout = 5s;
    auto client = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", options);
    return std::make_unique<C10dRendezvous>(c, client, "127.0.0.1", hosting);
  }

  static std::future<RendezvousRound> nextRoundAsync(C10dRendezvous& a) {
    return std::async(std::launch::async, [&a] { return a.nextRound(); });
  }

  // Two agents form a round together (each waits for the other).
  static void meet(C10dRendezvous& a, C10dRendezvous& b) {
    auto fa = nextRoundAsync(a);
    auto fb = nextRoundAsync(b);
    fa.get();
    fb.get();
  }

  // Polls membershipChange() until it says something or `limit` passes.
  static std::string waitForChange(C10dRendezvous& a, std::chrono::milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      auto reason = a.membershipChange();
      if (!reason.empty()) return reason;
      std::this_thread::sleep_for(20ms);
    }
    return "";
  }

  c10::intrusive_ptr<c10d::TCPStore> server_;
};

TEST_F(C10dRendezvousTest, MinNodesCloseTheRoundAfterTheLastCall) {
  auto c = config(2, 3);
  c.localWorkers = 2;
  auto a = agent(c);
  c.localWorkers = 3;
  auto b = agent(c);
  const auto start = Clock::now();
  auto fa = nextRoundAsync(*a);
  auto fb = nextRoundAsync(*b);
  const auto ra = fa.get();
  const auto rb = fb.get();
  const auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, 300ms) << "closed before the last call";
  EXPECT_LT(elapsed, 5s);
  EXPECT_EQ(ra.round, rb.round);
  EXPECT_EQ(ra.nnodes, 2);
  EXPECT_EQ(rb.nnodes, 2);
  EXPECT_EQ((std::set<int>{ra.nodeRank, rb.nodeRank}), (std::set<int>{0, 1}));
  EXPECT_EQ(ra.worldSize, 5);  // 2 + 3 local workers
  EXPECT_EQ(rb.worldSize, 5);
  // The first global ranks follow the node ranks: 0 and the other node's worker count.
  const auto& first = ra.nodeRank == 0 ? ra : rb;
  const auto& second = ra.nodeRank == 0 ? rb : ra;
  EXPECT_EQ(first.firstGlobalRank, 0);
  EXPECT_EQ(second.firstGlobalRank, first.nodeRank == ra.nodeRank ? 2 : 3);
  EXPECT_EQ(ra.masterAddr, "127.0.0.1");
  EXPECT_GT(ra.masterPort, 0);
  EXPECT_EQ(ra.masterPort, rb.masterPort);
  EXPECT_EQ(ra.members, rb.members);
}

TEST_F(C10dRendezvousTest, MaxNodesCloseTheRoundAtOnce) {
  auto c = config(1, 2);
  c.lastCallTimeout = 30s;
  auto a = agent(c);
  auto b = agent(c);
  const auto start = Clock::now();
  auto fa = nextRoundAsync(*a);
  auto fb = nextRoundAsync(*b);
  EXPECT_EQ(fa.get().nnodes, 2);
  EXPECT_EQ(fb.get().nnodes, 2);
  EXPECT_LT(Clock::now() - start, 5s) << "waited for the last call with MAX nodes in";
}

TEST_F(C10dRendezvousTest, RunIdsKeepJobsOnOneEndpointApart) {
  auto jobA = config(2, 2, "a");
  auto jobB = config(2, 2, "b");
  jobB.joinTimeout = 1s;
  auto a1 = agent(jobA);
  auto a2 = agent(jobA);
  auto b1 = agent(jobB);
  auto fb = std::async(std::launch::async, [&] { return b1->nextRound(); });
  auto fa1 = nextRoundAsync(*a1);
  auto fa2 = nextRoundAsync(*a2);
  EXPECT_EQ(fa1.get().nnodes, 2);
  EXPECT_EQ(fa2.get().nnodes, 2);
  try {
    fb.get();
    FAIL() << "job b formed a round with job a's nodes";
  } catch (const RendezvousFailed& e) {
    EXPECT_NE(std::string(e.what()).find("1/2 nodes joined"), std::string::npos) << e.what();
  }
}

TEST_F(C10dRendezvousTest, JoinTimeoutIsAClearError) {
  auto c = config(2, 3);
  c.joinTimeout = 400ms;
  auto a = agent(c);
  const auto start = Clock::now();
  try {
    a->nextRound();
    FAIL() << "a round formed with one node of MIN 2";
  } catch (const RendezvousFailed& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rendezvous timed out after"), std::string::npos) << what;
    EXPECT_NE(what.find("1/2 nodes joined (MIN 2, MAX 3)"), std::string::npos) << what;
    EXPECT_NE(what.find("join_timeout"), std::string::npos) << what;
  }
  EXPECT_LT(Clock::now() - start, 3s);
}

TEST_F(C10dRendezvousTest, AWaitingNodeMakesTheRunningOnesReform) {
  auto c = config(1, 3);
  auto a = agent(c);
  const auto first = a->nextRound();  // alone: MIN 1 after the last call
  EXPECT_EQ(first.nnodes, 1);
  EXPECT_EQ(a->membershipChange(), "");
  auto b = agent(c);
  auto fb = nextRoundAsync(*b);
  const auto reason = waitForChange(*a, 3s);
  EXPECT_NE(reason.find("waiting in round " + std::to_string(first.round + 1)), std::string::npos)
      << reason;
  const auto grown = a->nextRound();
  const auto rb = fb.get();
  EXPECT_EQ(grown.round, first.round + 1);
  EXPECT_EQ(grown.nnodes, 2);
  EXPECT_EQ(rb.round, grown.round);
}

// Below MAX a late node grows the job (AWaitingNodeMakesTheRunningOnesReform); at MAX it is
// a spare, as in torchelastic's redundancy list: it waits, the members keep running, and it
// takes the place of a member that leaves.
TEST_F(C10dRendezvousTest, ALateArrivalAtMaxWaitsAsASpareUntilAMemberLeaves) {
  auto c = config(2, 2);
  auto a = agent(c);
  auto b = agent(c);
  auto fa = nextRoundAsync(*a);
  auto fb = nextRoundAsync(*b);
  const int round = fa.get().round;
  fb.get();
  auto late = agent(c);
  auto fl = nextRoundAsync(*late);
  EXPECT_EQ(waitForChange(*a, 1s), "") << "a spare made a full job re-form";
  EXPECT_EQ(fl.wait_for(300ms), std::future_status::timeout) << "a spare formed a round";
  b.reset();  // a member dies: its heartbeat stops
  EXPECT_NE(waitForChange(*a, 3s).find("heartbeat stopped"), std::string::npos);
  const auto r = nextRoundAsync(*a).get();  // MAX 2: the spare and a
  EXPECT_EQ(r.round, round + 1);
  EXPECT_EQ(r.nnodes, 2);
  EXPECT_EQ(fl.get().round, round + 1);
}

// More live nodes than MAX re-formed the job without end: the one left out of each round
// made the members re-form into the next, which again left one out.
TEST_F(C10dRendezvousTest, MoreNodesThanMaxFormOneJobOnce) {
  auto c = config(1, 2);
  std::vector<std::unique_ptr<C10dRendezvous>> nodes;
  std::vector<std::future<RendezvousRound>> rounds;
  for (int i = 0; i < 3; ++i) nodes.push_back(agent(c));
  for (auto& node : nodes) rounds.push_back(nextRoundAsync(*node));
  // Two are admitted; the third waits as a spare.
  std::vector<int> admitted;
  const auto deadline = Clock::now() + 5s;
  while (admitted.size() < 2 && Clock::now() < deadline) {
    for (int i = 0; i < 3; ++i) {
      if (std::find(admitted.begin(), admitted.end(), i) == admitted.end() &&
          rounds[i].wait_for(10ms) == std::future_status::ready) {
        admitted.push_back(i);
      }
    }
  }
  ASSERT_EQ(admitted.size(), 2u);
  const int spare = 3 - admitted[0] - admitted[1];
  const auto first = rounds[admitted[0]].get();
  EXPECT_EQ(first.nnodes, 2);
  EXPECT_EQ(rounds[admitted[1]].get().round, first.round);
  for (int i : admitted) EXPECT_EQ(waitForChange(*nodes[i], 1s), "") << "node " << i;
  EXPECT_EQ(rounds[spare].wait_for(10ms), std::future_status::timeout) << "a second job formed";
  nodes[admitted[0]]->finish(true, "its workers succeeded");
  nodes[admitted[1]]->finish(true, "its workers succeeded");
  try {
    rounds[spare].get();
    FAIL() << "the spare joined a finished job";
  } catch (const RendezvousFailed& e) {
    EXPECT_NE(std::string(e.what()).find("has finished"), std::string::npos) << e.what();
  }
}

// A member whose workers failed comes back to the next round: at MAX, that (not a spare)
// makes the others re-form.
TEST_F(C10dRendezvousTest, AtMaxAMemberThatReformsMakesTheOthersReform) {
  auto c = config(2, 2);
  auto a = agent(c);
  auto b = agent(c);
  meet(*a, *b);
  auto fb = nextRoundAsync(*b);
  EXPECT_NE(waitForChange(*a, 3s).find("waiting in round"), std::string::npos);
  const auto r = a->nextRound();
  EXPECT_EQ(r.nnodes, 2);
  EXPECT_EQ(fb.get().round, r.round);
}

// SIGTERM while a node waits for its round: the launcher's check answers at the next poll.
TEST_F(C10dRendezvousTest, AStopSignalEndsTheWaitForARound) {
  auto c = config(2, 2);
  std::atomic<int> pending{0};
  c.pendingStopSignal = [&pending] { return pending.load(); };
  auto a = agent(c);
  auto fa = nextRoundAsync(*a);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(fa.wait_for(0ms), std::future_status::timeout);
  const auto start = Clock::now();
  pending = SIGTERM;
  try {
    fa.get();
    FAIL() << "a round formed with one node of MIN 2";
  } catch (const RendezvousFailed& e) {
    EXPECT_NE(std::string(e.what()).find("interrupted by signal 15"), std::string::npos)
        << e.what();
  }
  EXPECT_LT(Clock::now() - start, 1s);
}

// The host keeps the store up for the others, but only until each has left: one that saw
// the job closed leaves at its next nextRound(), not at close_timeout.
TEST_F(C10dRendezvousTest, TheHostStopsWaitingOnceEveryMemberSawTheJobClosed) {
  auto c = config(2, 2);
  c.closeTimeout = 20s;
  auto host = agent(c, /*hosting=*/true);
  auto b = agent(c);
  meet(*host, *b);
  const auto start = Clock::now();
  auto closing = std::async(std::launch::async, [&] { host->finish(false, "no restarts left"); });
  EXPECT_NE(waitForChange(*b, 3s).find("was closed"), std::string::npos);
  EXPECT_THROW(b->nextRound(), RendezvousFailed);
  closing.get();
  EXPECT_LT(Clock::now() - start, 5s) << "the host waited out close_timeout";
}

TEST_F(C10dRendezvousTest, ADeadNodesStoppedHeartbeatReformsTheGroup) {
  auto c = config(2, 2);
  auto a = agent(c);
  auto b = agent(c);
  meet(*a, *b);
  EXPECT_EQ(waitForChange(*a, 500ms), "") << "a live node was taken for dead";
  const std::string bId = b->nodeId();
  b.reset();  // its heartbeat thread stops, as when the node dies
  const auto start = Clock::now();
  const auto reason = waitForChange(*a, 3s);
  EXPECT_NE(reason.find("node " + bId + "'s heartbeat stopped"), std::string::npos) << reason;
  // keep_alive_interval 100 ms x keep_alive_max_attempt 3.
  EXPECT_LT(Clock::now() - start, 1500ms);
}

TEST_F(C10dRendezvousTest, AfterAMemberSucceededItsSilenceIsNoReasonToReform) {
  auto c = config(2, 2);
  auto a = agent(c);
  auto b = agent(c);
  meet(*a, *b);
  b->finish(true, "its workers succeeded");
  b.reset();  // it exits: its heartbeat stops
  EXPECT_EQ(waitForChange(*a, 1s), "") << "a finished node was taken for dead";
  auto late = agent(c);
  try {
    late->nextRound();
    FAIL() << "joined a finished job";
  } catch (const RendezvousFailed& e) {
    EXPECT_NE(std::string(e.what()).find("has finished"), std::string::npos) << e.what();
  }
}

TEST_F(C10dRendezvousTest, AClosedJobStopsTheOthers) {
  auto c = config(2, 2);
  auto a = agent(c);
  auto b = agent(c);
  meet(*a, *b);
  a->finish(false, "no restarts left");
  EXPECT_NE(b->membershipChange().find("the job was closed: " + a->nodeId() + ": no restarts left"),
            std::string::npos);
  try {
    b->nextRound();
    FAIL() << "joined a closed job";
  } catch (const RendezvousFailed& e) {
    EXPECT_NE(std::string(e.what()).find("was closed"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ddp::launcher
