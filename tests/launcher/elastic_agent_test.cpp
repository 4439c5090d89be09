// The elastic policy (Note [Elastic restarts]) with a scripted rendezvous and scripted
// attempt outcomes.
#include "launcher/elastic_agent.h"

#include <gtest/gtest.h>

#include <deque>

namespace ddp::launcher {
namespace {

// Rounds handed out in order; records what the agent tells it.
class ScriptedRendezvous : public NodeRendezvous {
 public:
  explicit ScriptedRendezvous(std::deque<RendezvousRound> rounds) : rounds_(std::move(rounds)) {}
  std::string nodeId() const override { return "node1"; }
  RendezvousRound nextRound() override {
    if (rounds_.empty()) throw RendezvousFailed("no more rounds in the script");
    auto round = rounds_.front();
    rounds_.pop_front();
    ++roundsGiven;
    return round;
  }
  std::string membershipChange() override { return ""; }
  void finish(bool succeeded, const std::string& reason) override {
    finished = succeeded ? "succeeded" : "failed: " + reason;
  }
  int roundsGiven = 0;
  std::string finished;

 private:
  std::deque<RendezvousRound> rounds_;
};

RendezvousRound round(int number, std::vector<std::string> members, int nodeRank = 0) {
  RendezvousRound r;
  r.round = number;
  r.nodeRank = nodeRank;
  r.nnodes = static_cast<int>(members.size());
  r.worldSize = r.nnodes * 2;
  r.firstGlobalRank = nodeRank * 2;
  r.masterAddr = "10.0.0.1";
  r.masterPort = 4000 + number;
  r.members = std::move(members);
  return r;
}

AttemptResult failed(int exitCode) {
  AttemptResult a;
  a.outcome = AttemptOutcome::kWorkerFailed;
  a.failure = WorkerFailure{};
  a.failure->status.exitCode = exitCode;
  return a;
}

AttemptResult outcome(AttemptOutcome o) {
  AttemptResult a;
  a.outcome = o;
  return a;
}

LaunchPlan basePlan(int maxRestarts) {
  LaunchPlan plan;
  plan.nprocPerNode = 2;
  plan.maxRestarts = maxRestarts;
  plan.rendezvousBackend = "c10d";
  return plan;
}

TEST(ElasticAgent, EachRoundGivesTheWorkersItsPlace) {
  ScriptedRendezvous rdzv({round(0, {"node0", "node1", "node2"}, 1)});
  std::vector<LaunchPlan> plans;
  const auto run = runElastic(basePlan(0), rdzv, [&](const LaunchPlan& plan, int) {
    plans.push_back(plan);
    return outcome(AttemptOutcome::kSucceeded);
  });
  EXPECT_EQ(run.exitCode, 0);
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].nodeRank, 1);
  EXPECT_EQ(plans[0].nnodes, 3);
  EXPECT_EQ(plans[0].worldSize(), 6);
  EXPECT_EQ(plans[0].globalRank(0), 2);
  EXPECT_EQ(plans[0].globalRank(1), 3);
  EXPECT_EQ(plans[0].masterPort, 4000);
  EXPECT_EQ(rdzv.finished, "succeeded");
}

TEST(ElasticAgent, AFailureAfterAPeerLeftIsNotCounted) {
  // max_restarts 0: a counted failure would end the run.
  ScriptedRendezvous rdzv({round(0, {"node0", "node1", "node2"}), round(1, {"node0", "node1"})});
  std::vector<int> restartCounts;
  int attempts = 0;
  const auto run = runElastic(basePlan(0), rdzv, [&](const LaunchPlan& plan, int restartCount) {
    restartCounts.push_back(restartCount);
    if (attempts++ == 0) return failed(1);
    EXPECT_EQ(plan.nnodes, 2);
    return outcome(AttemptOutcome::kSucceeded);
  });
  EXPECT_EQ(run.exitCode, 0);
  EXPECT_EQ(restartCounts, (std::vector<int>{0, 0}));
}

TEST(ElasticAgent, AFailureWithEveryMemberBackCountsAndTheBudgetEndsIt) {
  ScriptedRendezvous rdzv(
      {round(0, {"node0", "node1"}), round(1, {"node0", "node1"}), round(2, {"node0", "node1"})});
  std::vector<int> restartCounts;
  const auto run = runElastic(basePlan(1), rdzv, [&](const LaunchPlan&, int restartCount) {
    restartCounts.push_back(restartCount);
    return failed(1);
  });
  EXPECT_EQ(restartCounts, (std::vector<int>{0, 1}));
  EXPECT_EQ(run.exitCode, 1);
  EXPECT_EQ(rdzv.finished.rfind("failed: node node1 has no restarts left", 0), 0u) << rdzv.finished;
}

TEST(ElasticAgent, MembershipChangesNeverUseTheBudget) {
  ScriptedRendezvous rdzv(
      {round(0, {"node1"}), round(1, {"node1", "node2"}), round(2, {"node1", "node2", "node3"})});
  std::vector<int> restartCounts;
  const auto run = runElastic(basePlan(0), rdzv, [&](const LaunchPlan& plan, int restartCount) {
    restartCounts.push_back(restartCount);
    return outcome(plan.nnodes < 3 ? AttemptOutcome::kMembershipChanged
                                   : AttemptOutcome::kSucceeded);
  });
  EXPECT_EQ(run.exitCode, 0);
  EXPECT_EQ(restartCounts, (std::vector<int>{0, 0, 0}));
}

TEST(ElasticAgent, APermanentExitClosesTheJobWithoutAnotherRound) {
  ScriptedRendezvous rdzv({round(0, {"node0", "node1"}), round(1, {"node0", "node1"})});
  const auto run = runElastic(basePlan(5), rdzv, [&](const LaunchPlan&, int) { return failed(2); });
  EXPECT_EQ(run.exitCode, 2);
  EXPECT_EQ(rdzv.roundsGiven, 1);
  EXPECT_EQ(rdzv.finished.rfind("failed: rank 0 exited with the permanent code 2", 0), 0u)
      << rdzv.finished;
}

// The rendezvous fails after a worker failure (the host is gone, the job was closed): the
// worker's failure is still what the report and --error-file name.
TEST(ElasticAgent, ARendezvousFailureAfterAWorkerFailureKeepsTheWorkersFailure) {
  ScriptedRendezvous rdzv({round(0, {"node0", "node1"})});  // no second round
  const auto run = runElastic(basePlan(3), rdzv, [&](const LaunchPlan&, int) { return failed(1); });
  ASSERT_TRUE(run.failure.has_value());
  EXPECT_EQ(run.failure->status.exitCode, 1);
  EXPECT_EQ(run.exitCode, 1);
}

// Without a worker failure to report, the rendezvous error is the error.
TEST(ElasticAgent, ARendezvousFailureWithNothingElseToReportIsThrown) {
  ScriptedRendezvous rdzv({});
  EXPECT_THROW(
      runElastic(basePlan(3), rdzv,
                 [&](const LaunchPlan&, int) { return outcome(AttemptOutcome::kSucceeded); }),
      RendezvousFailed);
}

TEST(ElasticAgent, AnInterruptLeavesWithoutClosingTheJob) {
  ScriptedRendezvous rdzv({round(0, {"node0", "node1"})});
  auto interrupted = outcome(AttemptOutcome::kInterrupted);
  interrupted.signal = 15;
  const auto run =
      runElastic(basePlan(0), rdzv, [&](const LaunchPlan&, int) { return interrupted; });
  EXPECT_EQ(run.exitCode, 143);
  EXPECT_EQ(rdzv.finished, "");
}

}  // namespace
}  // namespace ddp::launcher
