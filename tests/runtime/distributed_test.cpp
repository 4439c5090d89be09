// ddp::init() across real processes: every supported way of being started (torchrun-
// style env, PyTorchJob env, mpirun), late and absent masters, bad configuration, and
// PyTorch's own torch.distributed as a peer. distributed_worker.cpp checks every value.
#include <gtest/gtest.h>

#include <memory>
#include <thread>

#include <torch/torch.h>

#include "runtime/config.h"
#include "runtime/distributed.h"
#include "runtime/error.h"
#include "tests/support/subprocess.h"

namespace ddp::testing {
namespace {

using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;

std::string worker() { return executableDir() + "/distributed_worker"; }

// torchrun-style variables for `rank` of `worldSize` on loopback.
Env rankEnv(int rank, int worldSize, const std::string& port) {
  return {{"RANK", std::to_string(rank)},       {"WORLD_SIZE", std::to_string(worldSize)},
          {"LOCAL_RANK", std::to_string(rank)}, {"LOCAL_WORLD_SIZE", std::to_string(worldSize)},
          {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", port},
          {"GLOO_SOCKET_IFNAME", "lo"},         {"OMP_NUM_THREADS", "1"}};
}

void expectVerified(ProcessResult& result, const std::string& line) {
  SCOPED_TRACE(result.output);
  EXPECT_FALSE(result.timedOut);
  EXPECT_EQ(result.termSignal, 0);
  EXPECT_EQ(result.exitCode, 0);
  EXPECT_NE(result.output.find(line), std::string::npos) << "missing: " << line;
}

class LoopbackGroupTest : public ::testing::TestWithParam<int> {};

TEST_P(LoopbackGroupTest, EveryRankSeesEveryValue) {
  const int worldSize = GetParam();
  const auto port = std::to_string(findFreePort());
  std::vector<std::unique_ptr<ChildProcess>> ranks;
  for (int rank = 0; rank < worldSize; ++rank) {
    auto env = rankEnv(rank, worldSize, port);
    env["DDPRUN_RDZV_TIMEOUT"] = "60";
    env["DDPRUN_COLLECTIVE_TIMEOUT"] = "120";
    ranks.push_back(
        std::make_unique<ChildProcess>(std::vector<std::string>{worker(), "gloo"}, env));
  }
  for (int rank = 0; rank < worldSize; ++rank) {
    auto result = ranks[rank]->wait(90s);
    expectVerified(result, "rank " + std::to_string(rank) + "/" + std::to_string(worldSize) +
                               " source=torchrun master=127.0.0.1: all collectives verified");
    // Note [Waiting for the other ranks]: the join had the rendezvous timeout, the
    // collectives keep theirs.
    EXPECT_NE(result.output.find("rank " + std::to_string(rank) + " collective_timeout_ms=120000"),
              std::string::npos)
        << result.output;
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, LoopbackGroupTest, ::testing::Values(2, 3, 4),
                         [](const auto& info) { return "world" + std::to_string(info.param); });

TEST(DistributedTest, PyTorchJobEnvironment) {
  // What the training operator injects into the master and one worker pod (nprocPerNode 1).
  const auto port = std::to_string(findFreePort());
  std::vector<std::unique_ptr<ChildProcess>> pods;
  for (int rank = 0; rank < 2; ++rank) {
    pods.push_back(std::make_unique<ChildProcess>(std::vector<std::string>{worker()},
                                                  Env{{"RANK", std::to_string(rank)},
                                                      {"WORLD_SIZE", "2"},
                                                      {"MASTER_ADDR", "localhost"},
                                                      {"MASTER_PORT", port},
                                                      {"PET_NODE_RANK", std::to_string(rank)},
                                                      {"PET_NNODES", "2"},
                                                      {"PET_NPROC_PER_NODE", "1"},
                                                      {"PET_MASTER_ADDR", "localhost"},
                                                      {"PET_MASTER_PORT", port},
                                                      {"PYTHONUNBUFFERED", "1"},
                                                      {"GLOO_SOCKET_IFNAME", "lo"}}));
  }
  for (int rank = 0; rank < 2; ++rank) {
    auto result = pods[rank]->wait(90s);
    expectVerified(result, "rank " + std::to_string(rank) +
                               "/2 source=pytorchjob master=localhost: all collectives verified");
  }
}

TEST(DistributedTest, WorkerStartedBeforeMasterStillJoins) {
  const auto port = std::to_string(findFreePort());
  ChildProcess early({worker(), "gloo"}, rankEnv(1, 2, port));
  std::this_thread::sleep_for(5s);
  ChildProcess master({worker(), "gloo"}, rankEnv(0, 2, port));
  auto workerResult = early.wait(90s);
  auto masterResult = master.wait(90s);
  expectVerified(workerResult, "rank 1/2 source=torchrun");
  expectVerified(masterResult, "rank 0/2 source=torchrun");
  EXPECT_NE(workerResult.output.find("event=master_unreachable attempt="), std::string::npos);
  EXPECT_NE(workerResult.output.find("nothing listens on the port yet"), std::string::npos);
}

// Note [Leaving a failed group]: the 8-rank teardown hang in small. A rank fails while one
// of its Gloo threads waits for a live but stuck peer; destroying the group would join that
// thread, blocked until the collective timeout (60 s here, 30 min by default).
TEST(DistributedTest, ARankThatFailsLeavesWhileAGlooThreadIsStillBlocked) {
  const auto port = std::to_string(findFreePort());
  auto env0 = rankEnv(0, 2, port);
  auto env1 = rankEnv(1, 2, port);
  env0["DDPRUN_COLLECTIVE_TIMEOUT"] = env1["DDPRUN_COLLECTIVE_TIMEOUT"] = "60";
  ChildProcess stuck({worker(), "gloo", "blocked_collective_error"}, env1);
  const auto start = std::chrono::steady_clock::now();
  ChildProcess failing({worker(), "gloo", "blocked_collective_error"}, env0);
  auto result = failing.wait(90s);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 200);
  EXPECT_NE(result.output.find("rank 0 leaves: a peer was lost"), std::string::npos);
  EXPECT_LT(elapsed, 20s) << "it waited for its blocked Gloo thread";
}

TEST(DistributedTest, MasterThatNeverAppearsFailsWithinTimeoutPlusTwoSeconds) {
  const auto port = std::to_string(findFreePort());
  auto env = rankEnv(1, 2, port);
  env["DDPRUN_RDZV_TIMEOUT"] = "3";
  const auto start = std::chrono::steady_clock::now();
  ChildProcess lonely({worker(), "gloo"}, env);
  auto result = lonely.wait(30s);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 200);  // retryable under the operators' ExitCode policy
  EXPECT_LT(elapsed, 5s);
  EXPECT_GE(elapsed, 3s);
  EXPECT_NE(result.output.find("rendezvous timed out after 3."), std::string::npos);
  EXPECT_NE(result.output.find("could not reach the master's store at 127.0.0.1:" + port),
            std::string::npos);
  EXPECT_NE(result.output.find("HINT: likely causes: the master (rank 0) has not started"),
            std::string::npos);
}

TEST(DistributedTest, UnresolvableMasterNameIsNamedInTheError) {
  auto env = rankEnv(1, 2, std::to_string(findFreePort()));
  env["MASTER_ADDR"] = "ddprun-test-master-0.invalid";
  env["DDPRUN_RDZV_TIMEOUT"] = "2";
  ChildProcess lonely({worker(), "gloo"}, env);
  auto result = lonely.wait(60s);
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 200);
  EXPECT_NE(result.output.find("host name 'ddprun-test-master-0.invalid' does not resolve"),
            std::string::npos);
}

struct BadConfigCase {
  std::string name;
  Env env;
  std::string backend;
  std::string message;
  friend void PrintTo(const BadConfigCase& c, std::ostream* os) { *os << c.name; }
};

class BadConfigTest : public ::testing::TestWithParam<BadConfigCase> {};

TEST_P(BadConfigTest, ExitsWith2AndSaysWhy) {
  ChildProcess process({worker(), GetParam().backend}, GetParam().env);
  auto result = process.wait(30s);
  EXPECT_EQ(result.exitCode, 2) << result.output;
  EXPECT_NE(result.output.find(GetParam().message), std::string::npos) << result.output;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadConfigTest,
    ::testing::Values(
        BadConfigCase{"NonNumericRank", {{"RANK", "abc"}, {"WORLD_SIZE", "2"}}, "gloo", "RANK=abc"},
        // A CUDA-off build (tests/build/torch_compat_test.sh) says that instead.
        BadConfigCase{"NcclWithoutCuda",
                      {},
                      "nccl",
                      HAVE_NCCL ? "needs a CUDA device, and this process can use none"
                                : "this build has no CUDA/NCCL (DDPRUN_WITH_CUDA=OFF)"},
        BadConfigCase{"UnknownBackend", {}, "mpi-ish", "unknown backend 'mpi-ish'"},
        BadConfigCase{"BadTimeout",
                      {{"DDPRUN_RDZV_TIMEOUT", "soon"}},
                      "gloo",
                      "DDPRUN_RDZV_TIMEOUT=soon: expected a positive number of seconds"},
        // 1e300 s became a negative number of milliseconds: a deadline already past.
        BadConfigCase{"TimeoutBeyondAWeek",
                      {{"DDPRUN_COLLECTIVE_TIMEOUT", "1e300"}},
                      "gloo",
                      "DDPRUN_COLLECTIVE_TIMEOUT=1e300: expected a positive number of seconds, at "
                      "most 604800; found 1e300, which is above 604800"},
        BadConfigCase{"UnknownHostAllocator",
                      {{"DDPRUN_HOST_ALLOCATOR", "jemalloc"}},
                      "gloo",
                      "DDPRUN_HOST_ALLOCATOR=jemalloc: expected 'keep'"}),
    [](const auto& info) { return info.param.name; });

// Note [Device choice]: --device against the backend, in this process (no group needed).
std::string deviceErrorOf(const std::string& name, comm::Backend backend) {
  try {
    resolveDevice(name, backend, 0);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(DeviceChoiceTest, AutoIsWhatTheBackendImplies) {
  EXPECT_EQ(resolveDevice("auto", comm::Backend::kGloo, 1), c10::Device(c10::kCPU));
  EXPECT_EQ(resolveDevice("auto", comm::Backend::kNccl, 1), c10::Device(c10::kCUDA, 1));
  EXPECT_EQ(resolveDevice("cpu", comm::Backend::kGloo, 1), c10::Device(c10::kCPU));
}

TEST(DeviceChoiceTest, CpuUnderNcclAndUnknownNamesAreConfigErrorsThatSayWhatToDo) {
  EXPECT_EQ(deviceErrorOf("cpu", comm::Backend::kNccl),
            "device 'cpu' with backend 'nccl': NCCL reduces CUDA tensors only. ---> HINT: use "
            "--device cuda or auto with nccl, or --backend gloo for the CPU.");
  EXPECT_EQ(deviceErrorOf("gpu", comm::Backend::kGloo),
            "unknown device 'gpu': expected cpu, cuda or auto");
}

TEST(DeviceChoiceTest, CudaWhereNoDeviceCanBeUsedSaysWhy) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a CUDA device is visible (tests/gpu run it)";
  const auto error = deviceErrorOf("cuda", comm::Backend::kGloo);
  EXPECT_TRUE(error.starts_with("device 'cuda' requested, but this build has no CUDA/NCCL") ||
              error.starts_with("device 'cuda' needs a CUDA device, and this process can use "
                                "none: "))
      << error;
  EXPECT_NE(error.find("---> HINT: use --device cpu"), std::string::npos) << error;
}

class MpirunTest : public ::testing::TestWithParam<int> {};

TEST_P(MpirunTest, MasterFoundThroughMpi) {
  const int n = GetParam();
  // No MASTER_ADDR: rank 0 hosts the store and broadcasts host:port through MPI.
  ChildProcess mpirun({MPIEXEC_EXECUTABLE, "--allow-run-as-root", "--oversubscribe", "-np",
                       std::to_string(n), "--mca", "btl", "self,tcp", "-x", "GLOO_SOCKET_IFNAME=lo",
                       "-x", "OMP_NUM_THREADS=1", worker(), "gloo"},
                      {});
  auto result = mpirun.wait(120s);
  for (int rank = 0; rank < n; ++rank) {
    expectVerified(result,
                   "rank " + std::to_string(rank) + "/" + std::to_string(n) + " source=openmpi");
  }
  EXPECT_NE(result.output.find("event=mpi_bootstrap master="), std::string::npos);
}

// Rank 0's host name does not resolve (a UTS namespace renames the host): rank 1 gives up at
// the rendezvous timeout, and the whole MPI job ends with 200 instead of hanging in
// MPI_Finalize while rank 0's store waits for rank 1.
TEST(MpirunFailureTest, UnreachableMasterAbortsTheJobWithTheTransientCode) {
  const auto start = std::chrono::steady_clock::now();
  ChildProcess mpirun(
      {"/usr/bin/unshare", "--uts", "/bin/sh", "-c",
       "hostname ddprun-no-such-host.invalid && exec \"$0\" \"$@\"", MPIEXEC_EXECUTABLE,
       "--allow-run-as-root", "--oversubscribe", "-np", "2", "--mca", "btl", "self,tcp", "-x",
       "GLOO_SOCKET_IFNAME=lo", "-x", "DDPRUN_RDZV_TIMEOUT=3", worker(), "gloo"},
      {});
  auto result = mpirun.wait(60s);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  SCOPED_TRACE(result.output);
  EXPECT_FALSE(result.timedOut);
  EXPECT_EQ(result.exitCode, 200);
  EXPECT_LT(elapsed, 20s);
  EXPECT_NE(result.output.find("ddprun-no-such-host.invalid"), std::string::npos);
  EXPECT_NE(result.output.find("aborting the MPI job (exit 200)"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Ranks, MpirunTest, ::testing::Values(2, 3),
                         [](const auto& info) { return "np" + std::to_string(info.param); });

class PythonPeerTest : public ::testing::TestWithParam<int> {};

// GetParam() = the rank Python takes: 1 joins our store, 0 hosts the store we join.
TEST_P(PythonPeerTest, PyTorchJoinsTheSameGroup) {
  const int pythonRank = GetParam();
  const auto port = std::to_string(findFreePort());
  std::unique_ptr<ChildProcess> ours, python;
  for (int rank = 0; rank < 2; ++rank) {
    if (rank == pythonRank) {
      python = std::make_unique<ChildProcess>(
          std::vector<std::string>{DDPRUN_PYTHON, PYTHON_PEER_SCRIPT}, rankEnv(rank, 2, port));
    } else {
      ours = std::make_unique<ChildProcess>(std::vector<std::string>{worker(), "gloo"},
                                            rankEnv(rank, 2, port));
    }
  }
  auto pythonResult = python->wait(120s);
  auto ourResult = ours->wait(120s);
  expectVerified(pythonResult,
                 "python rank " + std::to_string(pythonRank) + "/2: all collectives verified");
  expectVerified(ourResult, "rank " + std::to_string(1 - pythonRank) + "/2 source=torchrun");
}

INSTANTIATE_TEST_SUITE_P(PythonRank, PythonPeerTest, ::testing::Values(0, 1), [](const auto& info) {
  return "python_rank" + std::to_string(info.param);
});

}  // namespace
}  // namespace ddp::testing
