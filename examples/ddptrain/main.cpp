// ddptrain: data-parallel training of a model from the zoo on an MNIST-format data set.
// Every rank trains on its own shard of each epoch; ddp::DistributedDataParallel
// averages gradients over all ranks during backward, so every rank takes the same step.
//
//   ddprun --nproc-per-node 2 -- ddptrain --model cnn --data-dir /usr/share/datasets/fashion-mnist
#include <chrono>
#include <iostream>

#include <cxxopts.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/torch.h>

#include "data/idx_reader.h"
#include "models/model_zoo.h"
#include "runtime/build_info.h"
#include "runtime/ddp/distributed_data_parallel.h"
#include "runtime/distributed.h"
#include "runtime/log/logging.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string model = "cnn";
  std::string dataDir = "/usr/share/datasets/fashion-mnist";
  int epochs = 2;
  std::int64_t batchSize = 64;  // per rank
  double lr = 0.05;
  double momentum = 0.9;
  std::uint64_t seed = 42;
  int logEvery = 100;
  int threads = 0;  // 0: torch's default (OMP_NUM_THREADS)
  ddp::InitOptions init;
};

class UsageError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

Options parseOptions(int argc, char** argv) {
  Options o;
  cxxopts::Options cli("ddptrain", "Data-parallel training on an MNIST-format data set.\n"
                                   "Rank, world size and master come from the environment "
                                   "(torchrun/ddprun, PyTorchJob, MPI).");
  // clang-format off
  cli.add_options()
    ("model", "model: mlp or cnn", cxxopts::value(o.model)->default_value(o.model))
    ("data-dir", "directory with the four MNIST-format IDX files (.gz or plain)",
     cxxopts::value(o.dataDir)->default_value(o.dataDir))
    ("epochs", "passes over the training set", cxxopts::value(o.epochs)->default_value("2"))
    ("batch-size", "samples per rank per step", cxxopts::value(o.batchSize)->default_value("64"))
    ("lr", "SGD learning rate", cxxopts::value(o.lr)->default_value("0.05"))
    ("momentum", "SGD momentum", cxxopts::value(o.momentum)->default_value("0.9"))
    ("seed", "seed of weights and shuffling", cxxopts::value(o.seed)->default_value("42"))
    ("log-every", "steps between log lines", cxxopts::value(o.logEvery)->default_value("100"))
    ("threads", "torch intra-op threads per rank (0: OMP_NUM_THREADS or torch's default)",
     cxxopts::value(o.threads)->default_value("0"))
    ("backend", "gloo, nccl or auto (nccl when CUDA is available)",
     cxxopts::value(o.init.backend)->default_value("auto"))
    ("rdzv-timeout", "seconds to wait for the master's store (default: DDPRUN_RDZV_TIMEOUT "
     "or 300)", cxxopts::value<int>())
    ("collective-timeout", "seconds a collective may take before failing (default: "
     "DDPRUN_COLLECTIVE_TIMEOUT or 1800)", cxxopts::value<int>())
    ("log-level", "debug, info, warn, error", cxxopts::value<std::string>()->default_value("info"))
    ("version", "print the build (torch, CUDA, NCCL) and exit")
    ("h,help", "print this help");
  // clang-format on
  cxxopts::ParseResult result;
  try {
    result = cli.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    throw UsageError(std::string(e.what()) + "\nRun 'ddptrain --help' for the options.");
  }
  if (result.count("help")) {
    std::cout << cli.help() << std::endl;
    std::exit(ddp::kExitOk);
  }
  if (result.count("version")) {
    std::cout << ddp::describeBuild(ddp::buildInfo()) << std::endl;
    std::exit(ddp::kExitOk);
  }
  if (!result.unmatched().empty()) {
    throw UsageError("unexpected argument '" + result.unmatched().front() +
                     "'. Run 'ddptrain --help' for the options.");
  }
  if (o.epochs < 1) throw UsageError("--epochs must be >= 1, got " + std::to_string(o.epochs));
  if (o.batchSize < 1) throw UsageError("--batch-size must be >= 1");
  if (o.lr <= 0) throw UsageError("--lr must be > 0");
  if (o.logEvery < 1) throw UsageError("--log-every must be >= 1");
  for (const char* flag : {"rdzv-timeout", "collective-timeout"}) {
    if (!result.count(flag)) continue;
    const int seconds = result[flag].as<int>();
    if (seconds < 1) throw UsageError(std::string("--") + flag + " must be >= 1 second");
    (flag == std::string("rdzv-timeout") ? o.init.rendezvousTimeout
                                         : o.init.collectiveTimeout) =
        std::chrono::seconds(seconds);
  }
  ddp::log::setup("-", ddp::log::parseLevel(result["log-level"].as<std::string>()));
  return o;
}

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
};

// Each rank scores its slice of the test set; sums are reduced over all ranks.
EvalResult evaluate(torch::nn::Sequential& model, const ddp::data::ImageDataset& test,
                    c10d::ProcessGroup& group) {
  torch::NoGradGuard noGrad;
  model->eval();
  const auto n = test.images.size(0);
  const auto begin = n * group.getRank() / group.getSize();
  const auto end = n * (group.getRank() + 1) / group.getSize();
  double lossSum = 0, correct = 0;
  for (std::int64_t i = begin; i < end; i += 1000) {
    auto images = test.images.slice(0, i, std::min(i + 1000, end));
    auto labels = test.labels.slice(0, i, std::min(i + 1000, end));
    auto logits = model->forward(images);
    lossSum += torch::nn::functional::cross_entropy(
                   logits, labels,
                   torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                   .item<double>();
    correct += logits.argmax(1).eq(labels).sum().item<double>();
  }
  std::vector<torch::Tensor> sums{torch::tensor({lossSum, correct}, torch::kFloat64)};
  group.allreduce(sums)->wait();
  model->train();
  return {sums[0][0].item<double>() / n, sums[0][1].item<double>() / n};
}

int run(const Options& o) {
  const auto start = Clock::now();
  auto dist = ddp::init(o.init);
  const auto& env = dist.env;
  auto& group = dist.group;
  if (o.threads > 0) torch::set_num_threads(o.threads);
  torch::manual_seed(o.seed);

  const auto train = ddp::data::readMnistSplit(o.dataDir, "train");
  const auto test = ddp::data::readMnistSplit(o.dataDir, "t10k");
  ddp::models::InputShape shape{train.images.size(1), train.images.size(2),
                                train.images.size(3)};
  auto model = ddp::models::createModel(o.model, shape, 10);
  // Broadcasts rank 0's weights; gradients are then averaged in buckets during backward.
  ddp::DistributedDataParallel ddpModel(model, group);
  torch::optim::SGD optimizer(model->parameters(),
                              torch::optim::SGDOptions(o.lr).momentum(o.momentum));
  if (env.rank == 0) {
    ddp::log::info("ddptrain", "model={} parameters={} train={} test={} world_size={}", o.model,
                   ddp::models::parameterCount(*model), train.images.size(0),
                   test.images.size(0), env.worldSize);
  }

  // Each epoch: one permutation shared by all ranks (same seed); rank r takes every
  // world_size-th index from r, trimmed so all ranks run the same number of steps.
  const auto numTrain = train.images.size(0);
  const std::int64_t stepsPerEpoch = numTrain / env.worldSize / o.batchSize;
  std::int64_t step = 0, samples = 0;
  auto windowStart = Clock::now();
  for (int epoch = 0; epoch < o.epochs; ++epoch) {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(o.seed + epoch);
    auto order = torch::randperm(numTrain, generator, torch::kInt64);
    auto shard = order.slice(0, env.rank, numTrain, env.worldSize);
    for (std::int64_t s = 0; s < stepsPerEpoch; ++s, ++step) {
      auto indices = shard.slice(0, s * o.batchSize, (s + 1) * o.batchSize);
      auto images = train.images.index_select(0, indices);  // [B, 1, 28, 28]
      auto labels = train.labels.index_select(0, indices);  // [B]
      auto loss = torch::nn::functional::cross_entropy(ddpModel.forward(images), labels);
      optimizer.zero_grad();
      loss.backward();  // buckets are averaged over the ranks as their gradients arrive
      optimizer.step();
      samples += o.batchSize * env.worldSize;
      if (env.rank == 0 && (step + 1) % o.logEvery == 0) {
        const double seconds = std::chrono::duration<double>(Clock::now() - windowStart).count();
        ddp::log::info("ddptrain", "epoch={} step={} loss={:.4f} samples_per_s={:.0f}", epoch,
                       step + 1, loss.item<double>(),
                       o.logEvery * o.batchSize * env.worldSize / seconds);
        windowStart = Clock::now();
      }
    }
    const auto eval = evaluate(model, test, *group);
    if (env.rank == 0) {
      ddp::log::info("ddptrain", "epoch={} test_loss={:.4f} test_accuracy={:.4f}", epoch,
                     eval.loss, eval.accuracy);
    }
  }
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  if (env.rank == 0) {
    const auto eval = evaluate(model, test, *group);
    std::cout << fmt::format("final model={} world_size={} steps={} test_accuracy={:.4f} "
                             "test_loss={:.4f} samples_per_s={:.0f} wall_s={:.1f}",
                             o.model, env.worldSize, step, eval.accuracy, eval.loss,
                             samples / wall, wall)
              << std::endl;
  } else {
    evaluate(model, test, *group);
  }
  group->barrier()->wait();
  return ddp::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parseOptions(argc, argv));
  } catch (const UsageError& e) {
    std::cerr << "ddptrain: " << e.what() << std::endl;
    return ddp::kExitUsage;
  } catch (const ddp::data::DataError& e) {
    std::cerr << "ddptrain: " << e.what() << std::endl;
    return ddp::kExitUsage;
  } catch (const std::invalid_argument& e) {  // e.g. an unknown model name
    std::cerr << "ddptrain: " << e.what() << std::endl;
    return ddp::kExitUsage;
  } catch (const c10::DistError& e) {
    // Collective timeouts, lost peers: another attempt may succeed.
    std::cerr << "ddptrain: " << e.what_without_backtrace() << std::endl;
    return ddp::kExitTransient;
  } catch (const std::exception& e) {
    // Environment, configuration and rendezvous errors from ddp::init().
    std::cerr << "ddptrain: " << e.what() << std::endl;
    return ddp::exitCodeFor(e);
  }
}
