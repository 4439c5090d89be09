// ddprun as a user runs it: real worker processes (sh scripts), real signals.
#include <gtest/gtest.h>
#include <signal.h>

#include <regex>
#include <thread>

#include "tests/support/subprocess.h"

namespace ddp::testing {
namespace {

using namespace std::chrono_literals;

ProcessResult runDdprun(std::vector<std::string> args, std::chrono::milliseconds timeout = 60s) {
  args.insert(args.begin(), DDPRUN_BINARY);
  ChildProcess process(args, {});
  return process.wait(timeout);
}

bool processAlive(pid_t pid) { return kill(pid, 0) == 0; }

class SpawnTest : public ::testing::TestWithParam<int> {};

TEST_P(SpawnTest, EachWorkerGetsTorchrunEnvironment) {
  const int n = GetParam();
  auto result = runDdprun({"--nproc-per-node", std::to_string(n), "--master-port", "29999",
                           "--", "/bin/sh", "-c",
                           "echo \"rank=$RANK local=$LOCAL_RANK world=$WORLD_SIZE "
                           "lws=$LOCAL_WORLD_SIZE group=$GROUP_RANK "
                           "master=$MASTER_ADDR:$MASTER_PORT restarts=$TORCHELASTIC_RESTART_COUNT\""});
  SCOPED_TRACE(result.output);
  ASSERT_EQ(result.exitCode, 0);
  for (int rank = 0; rank < n; ++rank) {
    const auto line = "rank=" + std::to_string(rank) + " local=" + std::to_string(rank) +
                      " world=" + std::to_string(n) + " lws=" + std::to_string(n) +
                      " group=0 master=127.0.0.1:29999 restarts=0";
    EXPECT_NE(result.output.find(line), std::string::npos) << "missing: " << line;
  }
}

INSTANTIATE_TEST_SUITE_P(Workers, SpawnTest, ::testing::Values(1, 2, 3, 4));

TEST(LauncherTest, NodeRankOffsetsGlobalRanks) {
  auto result = runDdprun({"--nproc-per-node", "2", "--nnodes", "3", "--node-rank", "2", "--",
                           "/bin/sh", "-c", "echo \"rank=$RANK local=$LOCAL_RANK world=$WORLD_SIZE\""});
  SCOPED_TRACE(result.output);
  ASSERT_EQ(result.exitCode, 0);
  EXPECT_NE(result.output.find("rank=4 local=0 world=6"), std::string::npos);
  EXPECT_NE(result.output.find("rank=5 local=1 world=6"), std::string::npos);
}

TEST(LauncherTest, SetsOmpNumThreadsOnlyWhenUnset) {
  ChildProcess withValue({DDPRUN_BINARY, "--nproc-per-node", "2", "--", "/bin/sh", "-c",
                          "echo omp=$OMP_NUM_THREADS"},
                         {{"OMP_NUM_THREADS", "7"}});
  auto result = withValue.wait(30s);
  EXPECT_NE(result.output.find("omp=7"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("OMP_NUM_THREADS is unset"), std::string::npos);
}

TEST(LauncherTest, FirstFailureTearsDownTheOthersAndIsReported) {
  const auto start = std::chrono::steady_clock::now();
  // Rank 1 fails with 3; the others would sleep for a minute.
  auto result = runDdprun({"--nproc-per-node", "3", "--grace-period", "5", "--", "/bin/sh", "-c",
                           "if [ \"$RANK\" = 1 ]; then sleep 1; exit 3; fi; "
                           "echo worker-pid=$$; exec sleep 60"});
  const auto elapsed = std::chrono::steady_clock::now() - start;
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 3);
  EXPECT_LT(elapsed, 10s);
  EXPECT_NE(result.output.find("rank=1 pid="), std::string::npos);
  EXPECT_NE(result.output.find("exited with code 3; tearing down the group"), std::string::npos);
  std::smatch match;
  std::string rest = result.output;
  int checked = 0;
  while (std::regex_search(rest, match, std::regex("worker-pid=(\\d+)"))) {
    EXPECT_FALSE(processAlive(std::stoi(match[1]))) << "orphan pid " << match[1];
    rest = match.suffix();
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

TEST(LauncherTest, WorkerKilledBySignalGives128PlusSignal) {
  auto result = runDdprun({"--nproc-per-node", "2", "--", "/bin/sh", "-c",
                           "if [ \"$RANK\" = 0 ]; then kill -9 $$; fi; exec sleep 60"});
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 128 + 9);
  EXPECT_NE(result.output.find("killed by signal 9"), std::string::npos);
}

TEST(LauncherTest, SigtermIsForwardedAndExitIs143) {
  ChildProcess launcher({DDPRUN_BINARY, "--nproc-per-node", "2", "--", "/bin/sh", "-c",
                         "trap 'echo rank=$RANK got TERM; exit 0' TERM; "
                         "echo ready; while true; do sleep 0.1; done"},
                        {});
  std::this_thread::sleep_for(1500ms);
  kill(launcher.pid(), SIGTERM);
  auto result = launcher.wait(20s);
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 143);
  EXPECT_NE(result.output.find("rank=0 got TERM"), std::string::npos);
  EXPECT_NE(result.output.find("rank=1 got TERM"), std::string::npos);
}

TEST(LauncherTest, WorkerIgnoringSigtermIsKilledAfterGracePeriod) {
  const auto start = std::chrono::steady_clock::now();
  ChildProcess launcher({DDPRUN_BINARY, "--nproc-per-node", "2", "--grace-period", "1", "--",
                         "/bin/sh", "-c", "trap '' TERM; echo pid=$$; while true; do sleep 0.1; done"},
                        {});
  std::this_thread::sleep_for(1000ms);
  kill(launcher.pid(), SIGTERM);
  auto result = launcher.wait(20s);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 143);
  EXPECT_NE(result.output.find("after the 1000 ms grace period: SIGKILL"), std::string::npos);
  EXPECT_LT(elapsed, 8s);
}

struct UsageCase {
  std::vector<std::string> args;
  std::string message;
  friend void PrintTo(const UsageCase& c, std::ostream* os) { *os << c.message; }
};

class UsageErrorTest : public ::testing::TestWithParam<UsageCase> {};

TEST_P(UsageErrorTest, ExitsWith2AndSaysWhy) {
  auto result = runDdprun(GetParam().args);
  EXPECT_EQ(result.exitCode, 2) << result.output;
  EXPECT_NE(result.output.find(GetParam().message), std::string::npos) << result.output;
}

INSTANTIATE_TEST_SUITE_P(
    BadFlags, UsageErrorTest,
    ::testing::Values(
        UsageCase{{"--nproc-per-node", "abc", "true"}, "--nproc-per-node=abc: expected an integer"},
        UsageCase{{"--nproc-per-node", "0", "true"}, "--nproc-per-node=0: expected an integer in [1"},
        UsageCase{{"--nnodes", "2", "--node-rank", "2", "true"}, "--node-rank=2 must be < --nnodes=2"},
        UsageCase{{"--master-port", "70000", "true"}, "--master-port=70000: expected an integer in [1, 65535]"},
        UsageCase{{"--bogus", "true"}, "bogus"},
        UsageCase{{"--nproc-per-node", "2"}, "no PROGRAM given"}));

}  // namespace
}  // namespace ddp::testing
