// The restart policy, driven by scripted attempt outcomes (the real processes are in
// ddprun_test.cpp).
#include "launcher/worker_group.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <deque>

#include "runtime/exit_codes.h"

namespace ddp::launcher {
namespace {

AttemptResult succeeded() { return {}; }

AttemptResult failed(int rank, int exitCode, int signal = 0) {
  AttemptResult r;
  r.outcome = AttemptOutcome::kWorkerFailed;
  WorkerFailure f;
  f.globalRank = rank;
  f.status.exitCode = exitCode;
  f.status.signal = signal;
  r.failure = f;
  return r;
}

AttemptResult interrupted(int signal) {
  AttemptResult r;
  r.outcome = AttemptOutcome::kInterrupted;
  r.signal = signal;
  return r;
}

// Plays `outcomes` in order and records the restart count each attempt was given.
struct Script {
  std::deque<AttemptResult> outcomes;
  std::vector<int> restartCounts;
  AttemptRunner runner() {
    return [this](int restartCount) {
      restartCounts.push_back(restartCount);
      EXPECT_FALSE(outcomes.empty()) << "more attempts than scripted";
      auto next = outcomes.front();
      outcomes.pop_front();
      return next;
    };
  }
};

TEST(RestartPolicyTest, SuccessNeedsNoRestart) {
  Script s{{succeeded()}};
  const auto run = runWithRestarts(3, s.runner());
  EXPECT_EQ(run.exitCode, 0);
  EXPECT_EQ(run.restarts, 0);
  EXPECT_EQ(s.restartCounts, std::vector<int>({0}));
}

TEST(RestartPolicyTest, FailureIsRestartedWithTheCountIncremented) {
  Script s{{failed(1, 0, SIGKILL), failed(0, kExitTransient), succeeded()}};
  const auto run = runWithRestarts(2, s.runner());
  EXPECT_EQ(run.exitCode, 0);
  EXPECT_EQ(run.restarts, 2);
  EXPECT_FALSE(run.failure.has_value());  // recovered: nothing to report
  EXPECT_EQ(s.restartCounts, std::vector<int>({0, 1, 2}));
}

TEST(RestartPolicyTest, ExhaustedBudgetExitsWithTheLastFailure) {
  Script s{{failed(1, 0, SIGKILL), failed(2, 0, SIGKILL), failed(3, 7)}};
  const auto run = runWithRestarts(2, s.runner());
  EXPECT_EQ(run.exitCode, 7);
  ASSERT_TRUE(run.failure.has_value());
  EXPECT_EQ(run.failure->globalRank, 3);
  EXPECT_EQ(s.restartCounts, std::vector<int>({0, 1, 2}));
}

TEST(RestartPolicyTest, NoRestartsMeansOneAttempt) {
  Script s{{failed(0, 0, SIGSEGV)}};
  const auto run = runWithRestarts(0, s.runner());
  EXPECT_EQ(run.exitCode, 128 + SIGSEGV);
  EXPECT_EQ(s.restartCounts.size(), 1u);
}

TEST(RestartPolicyTest, UsageErrorIsPermanentAndNotRestarted) {
  Script s{{failed(1, kExitUsage)}};
  const auto run = runWithRestarts(5, s.runner());
  EXPECT_EQ(run.exitCode, kExitUsage);
  EXPECT_EQ(s.restartCounts.size(), 1u);
}

TEST(RestartPolicyTest, SignalToTheLauncherStopsWithoutRestart) {
  Script s{{failed(0, 1), interrupted(SIGTERM)}};
  const auto run = runWithRestarts(5, s.runner());
  EXPECT_EQ(run.exitCode, 143);
  EXPECT_EQ(run.signal, SIGTERM);
  EXPECT_EQ(s.restartCounts, std::vector<int>({0, 1}));
  Script t{{interrupted(SIGINT)}};
  EXPECT_EQ(runWithRestarts(5, t.runner()).exitCode, 130);
}

TEST(RestartPolicyTest, RetryableIsAnythingButUsage) {
  EXPECT_FALSE(isRetryable(ExitStatus{.exitCode = kExitUsage}));
  EXPECT_FALSE(isRetryable(ExitStatus{.exitCode = kExitTrainingFailed}));
  EXPECT_FALSE(isRetryable(ExitStatus{.exitCode = kExitRestartsExhausted}));
  EXPECT_TRUE(isRetryable(ExitStatus{.exitCode = 1}));
  EXPECT_TRUE(isRetryable(ExitStatus{.exitCode = kExitTransient}));
  EXPECT_TRUE(isRetryable(ExitStatus{.exitCode = 0, .signal = SIGKILL}));
}

}  // namespace
}  // namespace ddp::launcher
