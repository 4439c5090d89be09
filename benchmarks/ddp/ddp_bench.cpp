// One rank of the DDP benchmark (run under ddprun; run_ddp_benchmark.py drives it).
//   ddp_bench --model mlp_small|lenet|big --mode ddp|naive|compute|allreduce
//             [--steps N] [--warmup N] [--backend gloo|nccl] [--device cpu|cuda|auto]
// Modes: ddp = ddp::DistributedDataParallel; naive = one allreduce per parameter after
// backward (the pytorch/examples C++ pattern); compute = the same step without any
// communication; allreduce = one allreduce of a buffer as large as all gradients.
// --metrics (ddp): each step also does what Trainer::fit does for the metrics (phases, the
// step, loss, learning rate and samples: Note [Training metrics]), and under ddprun with a
// metrics port the exporter writes the rank's file: run_metrics_cost.py's "on" rows.
// --device cuda (scripts/device_check.sh): the model, its batch and the buffers on the GPU
// (Note [Device choice] in runtime/distributed.h), the clock read after a device sync.
// Rank 0 prints one JSON line with the mean step time.
#include <chrono>
#include <iostream>

#include <fmt/format.h>
#include <torch/torch.h>
#include <cxxopts.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "models/model_zoo.h"
#include "runtime/ddp/distributed_data_parallel.h"
#include "runtime/distributed.h"
#include "runtime/metrics/training_metrics.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace nn = torch::nn;

struct Workload {
  nn::Sequential model;
  torch::Tensor input;  // one rank's batch
  torch::Tensor labels;
};

// The same three models as python_ddp_bench.py.
Workload makeWorkload(const std::string& name) {
  if (name == "mlp_small") {  // overhead-bound: 64-128-128-10, batch 32
    return {nn::Sequential(nn::Linear(64, 128), nn::ReLU(), nn::Linear(128, 128), nn::ReLU(),
                           nn::Linear(128, 10)),
            torch::randn({32, 64}), torch::randint(10, {32})};
  }
  if (name == "lenet") {  // the zoo's LeNet-style CNN on 28x28, batch 64
    return {ddp::models::createModel("cnn", {}, 10), torch::randn({64, 1, 28, 28}),
            torch::randint(10, {64})};
  }
  if (name == "big") {  // 25.2M parameters, batch 8: communication >= compute
    return {nn::Sequential(nn::Linear(1024, 4096), nn::ReLU(), nn::Linear(4096, 4096), nn::ReLU(),
                           nn::Linear(4096, 1024), nn::ReLU(), nn::Linear(1024, 10)),
            torch::randn({8, 1024}), torch::randint(10, {8})};
  }
  throw std::invalid_argument("unknown --model " + name + ": mlp_small, lenet or big");
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options cli("ddp_bench", "One rank of the DDP benchmark");
  cli.add_options()("model", "mlp_small, lenet or big", cxxopts::value<std::string>())(
      "mode", "ddp, naive, compute or allreduce", cxxopts::value<std::string>())(
      "steps", "timed steps", cxxopts::value<int>()->default_value("100"))(
      "warmup", "untimed steps first", cxxopts::value<int>()->default_value("10"))(
      "grad-view", "ddp: gradients as views into the buckets (no copy back)",
      cxxopts::value<bool>()->default_value("false"))(
      "allgather-buckets-up-to-bytes",
      "ddp: DdpOptions::allgatherBucketsUpToBytes (0: every bucket by ring allreduce)",
      cxxopts::value<std::int64_t>()->default_value(
          std::to_string(ddp::kDefaultAllgatherBucketsUpToBytes)))(
      "metrics", "ddp: record the training metrics every step, as the Trainer does",
      cxxopts::value<bool>()->default_value("false"))(
      "backend", "gloo or nccl", cxxopts::value<std::string>()->default_value("gloo"))(
      "device", "cpu, cuda or auto (cuda under nccl)",
      cxxopts::value<std::string>()->default_value("auto"))("h,help", "print this help");
  cxxopts::ParseResult args;
  try {
    args = cli.parse(argc, argv);
    if (args.count("help")) {
      std::cout << cli.help() << std::endl;
      return 0;
    }
    for (const char* required : {"model", "mode"}) {
      if (!args.count(required)) {
        throw std::invalid_argument(std::string("--") + required + " is required");
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "ddp_bench: " << e.what() << ". Run 'ddp_bench --help'." << std::endl;
    return 2;
  }
  const auto modelName = args["model"].as<std::string>();
  const auto mode = args["mode"].as<std::string>();
  const int steps = args["steps"].as<int>(), warmup = args["warmup"].as<int>();
  torch::set_num_threads(1);
  torch::manual_seed(0);

  auto dist = ddp::init(
      {.backend = args["backend"].as<std::string>(), .device = args["device"].as<std::string>()});
  auto& group = *dist.group;
  auto work = makeWorkload(modelName);
  work.model->to(dist.device);
  work.input = work.input.to(dist.device);
  work.labels = work.labels.to(dist.device);
  // Kernels run asynchronously: the clock is read once the device is done.
  const auto sync = [&] {
    if (dist.device.is_cuda()) torch::cuda::synchronize();
  };
  const auto params = work.model->parameters();
  std::int64_t numParams = 0;
  for (auto& p : params) numParams += p.numel();

  std::unique_ptr<ddp::DistributedDataParallel<nn::Sequential>> ddpModel;
  const bool gradView = mode == "ddp" && args["grad-view"].as<bool>();
  if (mode == "ddp") {
    ddp::DdpOptions options;
    options.gradientAsBucketView = args["grad-view"].as<bool>();
    options.allgatherBucketsUpToBytes = args["allgather-buckets-up-to-bytes"].as<std::int64_t>();
    ddpModel = std::make_unique<ddp::DistributedDataParallel<nn::Sequential>>(work.model,
                                                                              dist.group, options);
  }
  torch::optim::SGD optimizer(params, torch::optim::SGDOptions(0.01));
  torch::Tensor flat = torch::randn({numParams}).to(dist.device);

  const bool recordMetrics = mode == "ddp" && args["metrics"].as<bool>();
  std::int64_t stepCount = 0;
  auto instrumentedStep = [&] {
    namespace health = ddp::health;
    torch::Tensor loss;
    {
      const health::PhaseScope data(health::Phase::kData);  // the batch is in memory already
    }
    {
      const health::PhaseScope forwardBackward(health::Phase::kForwardBackward);
      auto output = ddpModel->forward(work.input);
      loss = torch::nn::functional::cross_entropy(output, work.labels);
      optimizer.zero_grad();
      loss.backward();
    }
    {
      const health::PhaseScope optimizing(health::Phase::kOptimizer);
      optimizer.step();
    }
    health::stepDone(++stepCount);
    ddp::metrics::recordTraining(0, loss.item<double>(), 0.01, work.input.size(0));
  };
  auto step = [&] {
    if (recordMetrics) {
      instrumentedStep();
      return;
    }
    if (mode == "allreduce") {
      std::vector<torch::Tensor> t{flat};
      group.allreduce(t)->wait();
      return;
    }
    auto output = ddpModel ? ddpModel->forward(work.input) : work.model->forward(work.input);
    auto loss = torch::nn::functional::cross_entropy(output, work.labels);
    if (gradView) {
      ddpModel->zeroGrad();  // in place: keeps the grads' bucket views
    } else {
      optimizer.zero_grad();  // set_to_none, as Python's opt.zero_grad() in the twin script
    }
    loss.backward();
    if (mode == "naive") {
      for (auto& p : params) {
        std::vector<torch::Tensor> g{p.grad()};
        group.allreduce(g)->wait();
        p.grad().div_(group.getSize());
      }
    }
    optimizer.step();
  };
  if (mode != "ddp" && mode != "naive" && mode != "compute" && mode != "allreduce") {
    std::cerr << "unknown --mode " << mode << "\n";
    return 2;
  }
  for (int i = 0; i < warmup; ++i) step();
  sync();
  group.barrier()->wait();
  const auto start = Clock::now();
  for (int i = 0; i < steps; ++i) step();
  sync();
  // Ranks finish within one step of each other; the slowest defines the step time.
  std::vector<torch::Tensor> elapsed{
      torch::tensor({std::chrono::duration<double>(Clock::now() - start).count()}, torch::kFloat64)
          .to(dist.device)};
  c10d::AllreduceOptions maxOptions;
  maxOptions.reduceOp = c10d::ReduceOp::MAX;
  group.allreduce(elapsed, maxOptions)->wait();
  const double seconds = elapsed[0].item<double>();  // .item() waits for the device
  if (dist.rank() == 0) {
    std::cout << fmt::format(
                     "{{\"impl\": \"ddprun\", \"model\": \"{}\", \"mode\": \"{}\", \"params\": {}, "
                     "\"batch_per_rank\": {}, \"world_size\": {}, \"steps\": {}, "
                     "\"backend\": \"{}\", \"device\": \"{}\", "
                     "\"step_ms\": {:.4f}, \"samples_per_s\": {:.1f}}}",
                     modelName, mode, numParams, work.input.size(0), dist.worldSize(), steps,
                     ddp::comm::backendName(dist.backend),
                     dist.device.type() == c10::kCUDA ? "cuda" : "cpu", 1000 * seconds / steps,
                     work.input.size(0) * dist.worldSize() * steps / seconds)
              << std::endl;
  }
  return 0;
}
