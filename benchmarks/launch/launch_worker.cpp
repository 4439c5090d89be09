// One worker of the launch benchmark (run under ddprun; run_launch_benchmark.py drives it).
//   launch_worker [--steps K]
// It does what a minimal data-parallel training program does, and nothing more:
//   ddp::init() -> the zoo's mlp (784-256-128-10) -> ddp::DistributedDataParallel
//   -> K SGD steps on one in-memory random batch (32 samples) -> barrier -> exit.
// launch_worker.py is its Python twin (torch.distributed + PyTorch's DDP, same model).
//
// Each rank prints one line with wall-clock timestamps (CLOCK_REALTIME, ns since the epoch,
// the clock of Python's time.time_ns()) so the driver can subtract its own start time:
//   LAUNCH_BENCH impl=ddprun rank=R world_size=N start_ns=.. torch_ns=.. init_ns=..
//                ddp_ns=.. first_step_ns=.. end_ns=..
//   start       first line of main; LibTorch is already loaded and initialised
//               by the dynamic loader, so torch = start here (Python imports it later)
//   init        ddp::init() returned: rendezvous done, process group up
//   ddp         the model is built and wrapped (rank 0's weights broadcast)
//   first_step  the first optimizer.step() returned (its gradients were allreduced)
//   end         after the last step and the closing barrier, just before returning
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <iostream>

#include <fmt/format.h>
#include <torch/torch.h>
#include <cxxopts.hpp>

#include "models/model_zoo.h"
#include "runtime/ddp/distributed_data_parallel.h"
#include "runtime/distributed.h"

namespace {

constexpr std::int64_t kSampleFeatures = 784;  // a Fashion-MNIST image, flattened by the mlp
constexpr std::int64_t kClasses = 10;
constexpr std::int64_t kBatchPerRank = 32;

std::int64_t wallClockNs() {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  return std::int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

}  // namespace

int main(int argc, char** argv) {
  const auto startNs = wallClockNs();
  cxxopts::Options cli("launch_worker", "One worker of the launch benchmark");
  cli.add_options()("steps", "training steps", cxxopts::value<int>()->default_value("5"));
  const int steps = cli.parse(argc, argv)["steps"].as<int>();
  if (steps < 1) {
    std::cerr << "launch_worker: --steps must be >= 1, got " << steps << std::endl;
    return ddp::kExitUsage;
  }
  try {
    torch::manual_seed(0);
    auto dist = ddp::init({.backend = "gloo"});
    const auto initNs = wallClockNs();

    auto model = ddp::models::createModel(
        {.name = "mlp", .sampleShape = {kSampleFeatures}, .numClasses = kClasses});
    ddp::DistributedDataParallel ddpModel(model, dist.group);
    torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.01));
    const auto input = torch::randn({kBatchPerRank, kSampleFeatures});  // [B, 784]
    const auto labels = torch::randint(kClasses, {kBatchPerRank});      // [B]
    const auto ddpNs = wallClockNs();

    std::int64_t firstStepNs = 0;
    for (int step = 0; step < steps; ++step) {
      auto loss = torch::nn::functional::cross_entropy(ddpModel.forward(input), labels);
      optimizer.zero_grad();
      loss.backward();  // buckets are allreduced while backward runs
      optimizer.step();
      if (step == 0) firstStepNs = wallClockNs();
    }
    // Rank 0 hosts the store: nobody leaves before everybody is done with it.
    dist.group->barrier()->wait();
    const auto endNs = wallClockNs();
    // One write(2) per line, so the ranks' lines stay whole on the launcher's shared pipe.
    const auto line = fmt::format(
        "LAUNCH_BENCH impl=ddprun rank={} world_size={} start_ns={} torch_ns={} init_ns={} "
        "ddp_ns={} first_step_ns={} end_ns={}\n",
        dist.rank(), dist.worldSize(), startNs, startNs, initNs, ddpNs, firstStepNs, endNs);
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  } catch (const std::exception& error) {
    std::cerr << "launch_worker: " << error.what() << std::endl;
    return ddp::exitCodeFor(error);
  }
  return 0;
}
