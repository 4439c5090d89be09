// The CUDA paths end to end (label `gpu`; scripts/device_check.sh runs them on a GPU host):
// DDP on CUDA tensors against a single process (2 ranks over Gloo sharing one GPU, NCCL
// with one rank and, given two GPUs, two), ddptrain on CUDA to the accuracy target of
// the CPU suite, and checkpoints written on CUDA resumed on the CPU and the reverse.
// Where no CUDA device is visible (the development and CI machines) every test is
// skipped and says why, so the suite stays green there.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <regex>

#include <fmt/format.h>
#include <torch/torch.h>

#include "runtime/config.h"
#include "tests/support/subprocess.h"

namespace ddp::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Args = std::vector<std::string>;
using Env = std::map<std::string, std::string>;

// Why this process cannot run a test that needs `gpus` CUDA devices; "" when it can.
std::string whyNoGpus(int gpus) {
  if (!HAVE_CUDA) return "this build has no CUDA (DDPRUN_WITH_CUDA=OFF)";
  if (!torch::cuda::is_available()) {
    return "no CUDA device visible: torch::cuda::is_available() is false";
  }
  const auto visible = static_cast<int>(torch::cuda::device_count());
  if (visible < gpus) return fmt::format("needs {} CUDA devices, {} visible", gpus, visible);
  return "";
}

#define SKIP_WITHOUT_GPUS(gpus)                         \
  if (const auto why = whyNoGpus(gpus); !why.empty()) { \
    GTEST_SKIP() << why;                                \
  }

// The data set of the CPU suite's accuracy claim; a GPU host gets it from the device check.
std::string fashionMnist() {
  const char* dir = std::getenv("DDPRUN_FASHION_MNIST");
  return dir ? dir : "/usr/share/datasets/fashion-mnist";
}

// `world` ranks of argv on loopback, each with `extra` on top of the launch's environment;
// their results in rank order.
std::vector<ProcessResult> runRanks(int world, const Args& argv, const Env& extra = {}) {
  const auto port = std::to_string(findFreePort());
  std::vector<std::unique_ptr<ChildProcess>> ranks;
  for (int rank = 0; rank < world; ++rank) {
    Env env{{"RANK", std::to_string(rank)},       {"WORLD_SIZE", std::to_string(world)},
            {"LOCAL_RANK", std::to_string(rank)}, {"LOCAL_WORLD_SIZE", std::to_string(world)},
            {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", port},
            {"GLOO_SOCKET_IFNAME", "lo"},         {"OMP_NUM_THREADS", "1"}};
    for (const auto& [name, value] : extra) env[name] = value;
    ranks.push_back(std::make_unique<ChildProcess>(argv, env));
  }
  std::vector<ProcessResult> results;
  for (auto& r : ranks) results.push_back(r->wait(300s));
  return results;
}

// --- DDP on CUDA tensors against one process on the global batch (ddp_worker.cpp) ---------
struct CudaCase {
  std::string backend;
  int world;
  int gpus;  // devices the case needs
  std::string model;
  std::string mode;
  friend void PrintTo(const CudaCase& c, std::ostream* os) {
    *os << c.backend << "/" << c.world << "/" << c.model << "/" << c.mode;
  }
};

class CudaEquivalenceTest : public ::testing::TestWithParam<CudaCase> {};

TEST_P(CudaEquivalenceTest, MatchesSingleProcessOnTheGlobalBatch) {
  const auto& c = GetParam();
  SKIP_WITHOUT_GPUS(c.gpus);
  auto results = runRanks(c.world, {executableDir() + "/ddp_worker", c.model, c.mode},
                          {{"DDP_WORKER_BACKEND", c.backend}, {"DDP_WORKER_DEVICE", "cuda"}});
  for (int rank = 0; rank < c.world; ++rank) {
    const auto& result = results[rank];
    EXPECT_EQ(result.exitCode, 0) << result.output;
    EXPECT_NE(result.output.find("device=cuda:"), std::string::npos) << result.output;
    EXPECT_NE(result.output.find("within tolerance"), std::string::npos) << result.output;
  }
  // For scripts/device_check.sh's table (--gtest_output=json).
  static const std::regex kDiff(R"(max_abs_diff=(\S+))");
  std::smatch match;
  if (std::regex_search(results[0].output, match, kDiff))
    RecordProperty("max_abs_diff", match[1].str());
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaEquivalenceTest,
                         ::testing::Values(CudaCase{"gloo", 2, 1, "mlp", "plain"},
                                           CudaCase{"gloo", 2, 1, "cnn", "plain"},
                                           CudaCase{"gloo", 2, 1, "mlp", "nosync"},
                                           CudaCase{"gloo", 2, 1, "mlp", "fp16"},
                                           CudaCase{"gloo", 2, 1, "cnn", "grad_view"},
                                           CudaCase{"nccl", 1, 1, "cnn", "plain"},
                                           CudaCase{"nccl", 2, 2, "mlp", "plain"},
                                           CudaCase{"nccl", 2, 2, "cnn", "plain"}),
                         [](const auto& info) {
                           const auto& c = info.param;
                           return fmt::format("{}_world{}_{}_{}", c.backend, c.world, c.model,
                                              c.mode);
                         });

// --- ddptrain --device cuda ---------------------------------------------------------------
double reportedAccuracy(const std::string& output) {
  std::smatch match;
  static const std::regex kFinal(R"(final .*test_accuracy=([0-9.]+))");
  if (!std::regex_search(output, match, kFinal)) return -1;
  return std::stod(match[1]);
}

struct TrainCase {
  std::string backend;
  int world;
  int gpus;
  friend void PrintTo(const TrainCase& c, std::ostream* os) { *os << c.backend << "/" << c.world; }
};

class CudaTrainingTest : public ::testing::TestWithParam<TrainCase> {};

// The CPU suite's claim (CnnOnFashionMnistReaches88PercentInTwoEpochs), on CUDA tensors.
TEST_P(CudaTrainingTest, CnnOnFashionMnistReaches88PercentInTwoEpochs) {
  const auto& c = GetParam();
  SKIP_WITHOUT_GPUS(c.gpus);
  if (!fs::exists(fashionMnist())) {
    GTEST_SKIP() << "no Fashion-MNIST at " << fashionMnist() << " (DDPRUN_FASHION_MNIST)";
  }
  auto results = runRanks(
      c.world, {DDPTRAIN_BINARY, "--model", "cnn", "--data", "idx", "--data-dir", fashionMnist(),
                "--epochs", "2", "--backend", c.backend, "--device", "cuda"});
  for (const auto& r : results) ASSERT_EQ(r.exitCode, 0) << r.output;
  const auto& output = results[0].output;
  EXPECT_NE(
      output.find(fmt::format("event=group_ready backend={} world_size={}", c.backend, c.world)),
      std::string::npos)
      << output;
  EXPECT_NE(output.find("device=cuda:0"), std::string::npos) << output;
  std::cout << output.substr(output.find("final")) << "\n";
  const double accuracy = reportedAccuracy(output);
  RecordProperty("test_accuracy", fmt::format("{:.4f}", accuracy));  // device_check's table
  EXPECT_GE(accuracy, 0.88) << output;
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaTrainingTest,
                         ::testing::Values(TrainCase{"nccl", 1, 1}, TrainCase{"gloo", 2, 1},
                                           TrainCase{"nccl", 2, 2}),
                         [](const auto& info) {
                           return fmt::format("{}_world{}", info.param.backend, info.param.world);
                         });

// --- Checkpoints across devices -----------------------------------------------------------
class CrossDeviceCheckpointTest
    : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

// A checkpoint saved by a run on one device resumes a run on the other at its step, and
// that run trains on and saves.
TEST_P(CrossDeviceCheckpointTest, ResumesOnTheOtherDevice) {
  SKIP_WITHOUT_GPUS(1);
  const auto& [from, to] = GetParam();
  const auto dir =
      fs::temp_directory_path() / fmt::format("gpu_test_checkpoints_{}_{}_{}", getpid(), from, to);
  fs::remove_all(dir);
  auto args = [&](const std::string& device, int steps) {
    return Args{DDPTRAIN_BINARY,
                "--model",
                "mlp",
                "--data",
                "synthetic",
                "--batch-size",
                "32",
                "--max-steps",
                std::to_string(steps),
                "--checkpoint-every",
                "10",
                "--checkpoint-dir",
                dir.string(),
                "--log-every",
                "1000",
                "--backend",
                "gloo",
                "--device",
                device};
  };
  auto first = runRanks(1, args(from, 20));
  ASSERT_EQ(first[0].exitCode, 0) << first[0].output;
  ASSERT_TRUE(fs::exists(dir / "checkpoint-00000020.pt")) << first[0].output;
  auto second = runRanks(1, args(to, 40));
  ASSERT_EQ(second[0].exitCode, 0) << second[0].output;
  EXPECT_NE(second[0].output.find("event=resumed step=20"), std::string::npos) << second[0].output;
  EXPECT_NE(second[0].output.find(fmt::format("device={}", to == "cuda" ? "cuda:0" : "cpu")),
            std::string::npos)
      << second[0].output;
  EXPECT_TRUE(fs::exists(dir / "checkpoint-00000040.pt")) << second[0].output;
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Directions, CrossDeviceCheckpointTest,
                         ::testing::Values(std::make_pair("cuda", "cpu"),
                                           std::make_pair("cpu", "cuda")),
                         [](const auto& info) {
                           return info.param.first + "_to_" + info.param.second;
                         });

}  // namespace
}  // namespace ddp::testing
