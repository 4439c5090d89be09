// Note [One backend for every rank] over c10d's own in-process store, and the words a rank
// gets when it cannot use CUDA.
#include "runtime/comm/backend_choice.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "runtime/error.h"

namespace ddp::comm {
namespace {

using namespace std::chrono_literals;

BackendChoice choice(const std::string& requested, Backend local) {
  return {.requested = requested, .local = local};
}

std::string errorOf(c10d::Store& store, int rank, const BackendChoice& c) {
  try {
    agreeOnBackend(store, rank, "node-b", c);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(BackendChoiceTest, EveryRankTakesRankZerosBackend) {
  c10d::HashStore store;
  EXPECT_EQ(agreeOnBackend(store, 0, "node-a", choice("auto", Backend::kGloo)), Backend::kGloo);
  EXPECT_EQ(agreeOnBackend(store, 1, "node-b", choice("auto", Backend::kGloo)), Backend::kGloo);
  // A rank with a GPU follows rank 0's Gloo rather than starting NCCL alone.
  EXPECT_EQ(agreeOnBackend(store, 2, "node-c", choice("auto", Backend::kNccl)), Backend::kGloo);
}

TEST(BackendChoiceTest, ARankWithoutCudaUnderAutoEndsNamingItselfInsteadOfHanging) {
  c10d::HashStore store;
  agreeOnBackend(store, 0, "node-a", choice("auto", Backend::kNccl));
  const auto error = errorOf(store, 3, choice("auto", Backend::kGloo));
  EXPECT_NE(error.find("rank 3 on node-b cannot follow rank 0's backend nccl"), std::string::npos)
      << error;
  EXPECT_NE(error.find("nvidia.com/gpu"), std::string::npos) << error;
  EXPECT_NE(error.find("--backend gloo"), std::string::npos) << error;
}

TEST(BackendChoiceTest, AnExplicitBackendThatDiffersFromRankZerosIsAConfigError) {
  c10d::HashStore store;
  agreeOnBackend(store, 0, "node-a", choice("gloo", Backend::kGloo));
  const auto error = errorOf(store, 1, choice("nccl", Backend::kNccl));
  EXPECT_NE(error.find("rank 1 on node-b was given --backend nccl, but rank 0 uses gloo"),
            std::string::npos)
      << error;
}

TEST(BackendChoiceTest, ARankThatArrivesFirstWaitsForRankZero) {
  c10d::HashStore store;
  auto follower = std::async(std::launch::async, [&] {
    return agreeOnBackend(store, 1, "node-b", choice("auto", Backend::kNccl));
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(follower.wait_for(0s), std::future_status::timeout);
  agreeOnBackend(store, 0, "node-a", choice("auto", Backend::kGloo));
  EXPECT_EQ(follower.get(), Backend::kGloo);
}

// A rank 0 that is Python's torch.distributed publishes nothing: the others keep their own
// choice after a while instead of waiting forever (tests/runtime/distributed_test's Python
// peer as rank 0 timed out without this).
TEST(BackendChoiceTest, ARankZeroOutsideDdprunLeavesEachRankItsOwnChoice) {
  c10d::HashStore store;
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(agreeOnBackend(store, 1, "node-b", choice("auto", Backend::kGloo)), Backend::kGloo);
  EXPECT_GE(std::chrono::steady_clock::now() - started, 9s);
}

// What the CUDA runtime of this build (13.2) reports on a node without a usable device.
CudaProbe failedProbe(int error, const std::string& name, int driverVersion,
                      const std::string& nodeDriver) {
  return {.error = error,
          .errorName = name,
          .driverVersion = driverVersion,
          .runtimeVersion = 13020,
          .nodeDriver = nodeDriver};
}

TEST(BackendChoiceTest, AnOldDriverIsNamedWithTheVersionFoundAndTheOneNeeded) {
  const auto text =
      describeCudaProblem(failedProbe(35, "cudaErrorInsufficientDriver", 12040, "550.54.15"));
  EXPECT_NE(text.find("driver 550.54.15 supports CUDA 12.4"), std::string::npos) << text;
  EXPECT_NE(text.find("CUDA runtime 13.2 needs a driver >= 580"), std::string::npos) << text;
  EXPECT_EQ(text.find("nvidia.com/gpu"), std::string::npos) << text;  // not the GPU limit
}

TEST(BackendChoiceTest, NoDriverAndNoDeviceAreToldApart) {
  EXPECT_NE(describeCudaProblem(failedProbe(35, "cudaErrorInsufficientDriver", 0, ""))
                .find("no NVIDIA driver (libcuda.so.1)"),
            std::string::npos);
  const auto text = describeCudaProblem(failedProbe(100, "cudaErrorNoDevice", 13020, "580.65.06"));
  EXPECT_NE(text.find("driver 580.65.06 (CUDA 13.2) sees no device"), std::string::npos) << text;
  CudaProbe usable;
  usable.devices = 1;
  EXPECT_EQ(describeCudaProblem(usable), "");
}

TEST(BackendChoiceTest, MinimumDriversFollowNvidiasTable) {
  EXPECT_EQ(minimumDriverFor(13), "580");
  EXPECT_EQ(minimumDriverFor(12), "525");
  EXPECT_EQ(minimumDriverFor(11), "450");
  EXPECT_EQ(minimumDriverFor(10), "");
}

// This machine has no GPU and no driver: the probe says which of the two it is.
TEST(BackendChoiceTest, ThisMachinesProbeSaysWhyNoDeviceCanBeUsed) {
  const auto probe = probeCuda();
  if (probe.devices > 0) GTEST_SKIP() << "a CUDA device is visible here";
  const auto text = describeCudaProblem(probe);
  EXPECT_FALSE(text.empty());
  EXPECT_TRUE(text.find("no NVIDIA driver") != std::string::npos ||
              text.find("sees no device") != std::string::npos ||
              text.find("no CUDA") != std::string::npos)
      << text;
}

}  // namespace
}  // namespace ddp::comm
