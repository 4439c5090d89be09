// custom_loop: a training program of its own on an installed ddprun (README, "Your own
// training program"). It lives outside ddprun's build: its CMakeLists.txt finds the
// installed package and links ddprun::runtime, nothing else.
//
//   custom_loop [--trainer [--data D] [--checkpoint-dir D]] [--steps N]   under the launcher:
//   ddprun --standalone --nproc-per-node 2 -- ./custom_loop [--trainer]
//   custom_loop --write-data D        writes the data set to D/{train,test}.bin and ends
//
// Two ways to train the same model on the same data:
//   (default)  a loop written by hand around ddp::DistributedDataParallel;
//   --trainer  the library's ddp::train::Trainer, given this file's model, its own loss
//              (Huber) and metric (mean absolute error), and a data set read from a
//              file of fixed-size records, only the records each batch needs, on the
//              Trainer's prefetch thread: D/train.bin and D/test.bin with --data D (as
//              --write-data D writes them: an image layer, a mounted volume), else files
//              it writes to a temporary directory. With --checkpoint-dir, the Trainer checkpoints
//              there, keeps its run journal, and marks the run complete at the end: run
//              again, the program sees the marker and ends at once.
//
// The model (a small MLP) and the data (a noisy linear target, made from a fixed seed, the
// same on every rank, then sharded by rank) are this file's own. The loop is written by
// hand and reads top to bottom: next batch, forward, zero grad, backward (DDP averages the
// gradients over the ranks as they become ready), step, one log line on rank 0. At the end
// every rank must hold bitwise the same parameters: checked with two allreduces (MAX and
// MIN) straight on the process group.
//
// Exit codes: 0 trained and in sync; 1 the parameters differ across ranks or the loss did
// not go down; 2 bad arguments or environment; 200 a transient failure (ddp::exitCodeFor).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "runtime/ddprun.h"
#include "runtime/env/value_parser.h"
#include "runtime/train/checkpointer.h"
#include "runtime/train/trainer.h"

namespace {

constexpr std::int64_t kDefaultSteps = 60;
constexpr std::int64_t kSamples = 1024;  // the whole data set, before sharding
constexpr std::int64_t kFeatures = 16;
constexpr std::int64_t kHidden = 32;
constexpr std::int64_t kBatchPerRank = 32;
constexpr double kLearningRate = 0.05;
constexpr std::uint64_t kDataSeed = 1234;
constexpr std::uint64_t kModelSeed = 42;
constexpr std::int64_t kLogEvery = 10;
constexpr std::int64_t kMaxSteps = 1000000;

struct Options {
  std::int64_t steps = kDefaultSteps;
  bool trainer = false;
  std::string checkpointDir;  // --trainer: "" = no checkpoints
  std::string dataDir;        // --trainer: "" = write the data to a temporary directory
  std::string writeDataDir;   // --write-data: write the data set there, train nothing
};

constexpr const char* kUsage =
    "custom_loop [--trainer [--data D] [--checkpoint-dir D]] [--steps N] | --write-data D";

// Two layers; DDP needs nothing from a module but its parameters.
struct RegressorImpl : torch::nn::Module {
  RegressorImpl()
      : hidden(register_module("hidden", torch::nn::Linear(kFeatures, kHidden))),
        out(register_module("out", torch::nn::Linear(kHidden, 1))) {}
  torch::Tensor forward(const torch::Tensor& x) {  // x: [batch, kFeatures] -> [batch, 1]
    return out(torch::tanh(hidden(x)));
  }
  torch::nn::Linear hidden, out;
};
TORCH_MODULE(Regressor);

struct Shard {
  torch::Tensor inputs;   // [kSamples / worldSize, kFeatures]
  torch::Tensor targets;  // [kSamples / worldSize, 1]
};

// y = x . w + b + noise over the whole data set, drawn from kDataSeed (identical on every
// rank); this rank keeps samples rank, rank + worldSize, ... (DistributedSampler's
// interleaving, without the shuffle), the tail that does not divide evenly dropped.
Shard makeShard(int rank, int worldSize, const c10::Device& device) {
  torch::manual_seed(kDataSeed);
  auto x = torch::randn({kSamples, kFeatures});
  auto w = torch::randn({kFeatures, 1});
  auto y = x.matmul(w) + 0.5 + 0.01 * torch::randn({kSamples, 1});
  const std::int64_t perRank = kSamples / worldSize;
  auto rows = torch::arange(rank, perRank * worldSize, worldSize);
  return {x.index_select(0, rows).to(device), y.index_select(0, rows).to(device)};
}

// Every parameter flattened into one vector, in registration order.
torch::Tensor flatParameters(torch::nn::Module& module) {
  std::vector<torch::Tensor> flat;
  for (const auto& p : module.parameters()) flat.push_back(p.detach().reshape(-1));
  return torch::cat(flat);
}

// The largest difference between two ranks' copies of any parameter: elementwise MAX and
// MIN over the ranks, straight on the process group.
double parameterSpread(ddp::Distributed& dist, torch::nn::Module& module) {
  std::vector<torch::Tensor> highest{flatParameters(module)};
  std::vector<torch::Tensor> lowest{highest[0].clone()};
  c10d::AllreduceOptions maxOptions;
  maxOptions.reduceOp = c10d::ReduceOp::MAX;
  c10d::AllreduceOptions minOptions;
  minOptions.reduceOp = c10d::ReduceOp::MIN;
  dist.group->allreduce(highest, maxOptions)->wait();
  dist.group->allreduce(lowest, minOptions)->wait();
  return (highest[0] - lowest[0]).abs().max().item<double>();
}

// The hand-written loop. Returns the exit code.
int runHandWrittenLoop(const Options& options) {
  auto dist = ddp::init();
  const bool logs = dist.rank() == 0;
  const auto shard = makeShard(dist.rank(), dist.worldSize(), dist.device);
  const std::int64_t batchesPerEpoch = shard.inputs.size(0) / kBatchPerRank;
  if (batchesPerEpoch == 0) {
    std::cerr << "custom_loop: " << dist.worldSize() << " ranks leave " << shard.inputs.size(0)
              << " samples per rank, fewer than one batch of " << kBatchPerRank << std::endl;
    return ddp::kExitUsage;
  }

  // Different seeds per rank on purpose: DistributedDataParallel starts everyone from
  // rank 0's weights (it broadcasts them when it wraps the module).
  torch::manual_seed(kModelSeed + static_cast<std::uint64_t>(dist.rank()));
  Regressor model;
  model->to(dist.device);
  ddp::DistributedDataParallel ddpModel(model, dist.group);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(kLearningRate));

  double firstLoss = 0;
  double lastLoss = 0;
  for (std::int64_t step = 0; step < options.steps; ++step) {
    const std::int64_t start = (step % batchesPerEpoch) * kBatchPerRank;
    auto inputs = shard.inputs.narrow(0, start, kBatchPerRank);    // [kBatchPerRank, kFeatures]
    auto targets = shard.targets.narrow(0, start, kBatchPerRank);  // [kBatchPerRank, 1]
    auto loss = torch::mse_loss(ddpModel.forward(inputs), targets);
    optimizer.zero_grad();
    loss.backward();  // gradients averaged over the ranks here
    optimizer.step();
    ddp::health::stepDone(step + 1);  // the watchdog's hang bound calibrates on step times
    lastLoss = loss.item<double>();   // this rank's batch
    // What ddprun's /metrics shows for this rank beside the step (ddprun_loss, ...).
    ddp::metrics::recordTraining(step / batchesPerEpoch, lastLoss, kLearningRate, kBatchPerRank);
    if (step == 0) firstLoss = lastLoss;
    if (logs && (step % kLogEvery == 0 || step + 1 == options.steps)) {
      std::cout << "step " << step + 1 << "/" << options.steps << " loss " << lastLoss << std::endl;
    }
  }

  const double spread = parameterSpread(dist, *model);
  if (spread != 0) {
    std::cerr << "custom_loop: rank " << dist.rank() << ": parameters differ across the "
              << dist.worldSize() << " ranks by up to " << spread << " after " << options.steps
              << " steps (DDP must keep them identical)" << std::endl;
    return 1;
  }
  if (options.steps > 0 && !(lastLoss < firstLoss)) {
    std::cerr << "custom_loop: rank " << dist.rank() << ": the loss did not go down (" << firstLoss
              << " at step 1, " << lastLoss << " at step " << options.steps << ")" << std::endl;
    return 1;
  }
  if (logs) {
    std::cout << "custom_loop: " << dist.worldSize() << " ranks, " << options.steps
              << " steps, loss " << firstLoss << " -> " << lastLoss
              << ", parameters identical on every rank" << std::endl;
  }
  return ddp::kExitOk;
}

// A data set on disk: record i is kFeatures float32 inputs then one float32 target, read
// with pread only when a batch asks for it. The Trainer calls read() on its prefetch
// thread; this class keeps no state besides the open file.
class RecordFileDataset : public ddp::train::Dataset {
 public:
  static constexpr std::int64_t kRecordFloats = kFeatures + 1;

  explicit RecordFileDataset(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      throw ddp::PermanentError("cannot open the data file '" + path +
                                "': " + std::strerror(errno));
    }
    const auto bytes = static_cast<std::int64_t>(std::filesystem::file_size(path));
    if (bytes % (kRecordFloats * 4) != 0) {
      throw ddp::PermanentError("'" + path + "' holds " + std::to_string(bytes) +
                                " bytes, not a whole number of " +
                                std::to_string(kRecordFloats * 4) + "-byte records");
    }
    size_ = bytes / (kRecordFloats * 4);
  }
  ~RecordFileDataset() override { ::close(fd_); }

  std::int64_t size() const override { return size_; }

  ddp::train::Batch read(const torch::Tensor& indices) override {
    const auto count = indices.size(0);
    auto records = torch::empty({count, kRecordFloats}, torch::kFloat32);
    const auto* index = indices.data_ptr<std::int64_t>();
    for (std::int64_t i = 0; i < count; ++i) {
      const auto bytes = static_cast<ssize_t>(kRecordFloats * 4);
      if (::pread(fd_, records[i].data_ptr<float>(), bytes, index[i] * bytes) != bytes) {
        throw ddp::TransientError("short read of record " + std::to_string(index[i]) + " of '" +
                                  path_ + "'");
      }
    }
    return {records.narrow(1, 0, kFeatures), records.narrow(1, kFeatures, 1)};
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::int64_t size_ = 0;
};

// Writes samples [first, first + count) of the data set as records (every rank the same
// file contents; each rank its own file, so no rank waits for another's write).
std::string writeRecords(const std::string& path, std::int64_t first, std::int64_t count) {
  torch::manual_seed(kDataSeed);
  auto x = torch::randn({kSamples, kFeatures});
  auto w = torch::randn({kFeatures, 1});
  auto y = x.matmul(w) + 0.5 + 0.01 * torch::randn({kSamples, 1});
  auto records = torch::cat({x, y}, 1).narrow(0, first, count).contiguous();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(records.data_ptr<float>()),
            static_cast<std::streamsize>(records.numel() * 4));
  if (!out) throw ddp::PermanentError("cannot write the data file '" + path + "'");
  return path;
}

// The whole data set as two record files, dir/train.bin (the first 3/4) and dir/test.bin.
std::filesystem::path writeDataSet(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const std::int64_t trainSamples = kSamples * 3 / 4;
  writeRecords((dir / "train.bin").string(), 0, trainSamples);
  writeRecords((dir / "test.bin").string(), trainSamples, kSamples - trainSamples);
  return dir;
}

// The library's Trainer with this file's model, loss, metric and data set.
int runTrainer(const Options& options) {
  // A finished run, started again (a recreated pod): nothing to do, and no peers to wait for.
  if (const auto done = ddp::train::readCompletionMarker(options.checkpointDir)) {
    std::cout << "custom_loop --trainer: already complete at step " << done->step << " ("
              << done->checkpoint << ", " << done->finishedAt << ")" << std::endl;
    return ddp::kExitOk;
  }
  auto dist = ddp::init();
  const auto dir = options.dataDir.empty()
                       ? writeDataSet(std::filesystem::temp_directory_path() /
                                      ("custom_loop_" + std::to_string(::getpid())))
                       : std::filesystem::path(options.dataDir);
  RecordFileDataset train((dir / "train.bin").string());
  RecordFileDataset test((dir / "test.bin").string());

  ddp::train::Objective objective;
  objective.loss = [](const torch::Tensor& output, const torch::Tensor& target) {
    return torch::nn::functional::huber_loss(output, target);
  };
  objective.metrics.push_back({"mae", [](const torch::Tensor& output, const torch::Tensor& target) {
                                 return (output - target).abs().sum();
                               }});
  ddp::train::TrainerOptions trainerOptions;
  trainerOptions.maxSteps = options.steps;
  trainerOptions.batchSize = kBatchPerRank;
  trainerOptions.optimizer = {.name = "adam", .lr = 0.01};
  trainerOptions.logEvery = kLogEvery;
  trainerOptions.checkpointDir = options.checkpointDir;
  trainerOptions.checkpointEvery = 20;

  torch::manual_seed(kModelSeed);
  Regressor model;
  model->to(dist.device);
  ddp::train::Trainer trainer(dist, model, trainerOptions, objective);
  const auto before = trainer.evaluate(test);
  const auto result = trainer.fit(train, test);
  if (options.dataDir.empty()) std::filesystem::remove_all(dir);
  const double spread = parameterSpread(dist, *model);
  if (spread != 0) {
    std::cerr << "custom_loop: rank " << dist.rank() << ": parameters differ across ranks by "
              << spread << std::endl;
    return 1;
  }
  if (options.steps > 0 && !(result.test.value("mae") < before.value("mae"))) {
    std::cerr << "custom_loop: the test error did not go down (mae " << before.value("mae")
              << " -> " << result.test.value("mae") << ")" << std::endl;
    return 1;
  }
  if (dist.rank() == 0) {
    std::cout << "custom_loop --trainer: " << dist.worldSize() << " ranks, " << result.steps
              << " steps, test mae " << before.value("mae") << " -> " << result.test.value("mae")
              << ", parameters identical on every rank" << std::endl;
  }
  return ddp::kExitOk;
}

// kUsage's arguments; throws ddp::ConfigError for anything else.
Options parseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--trainer") {
      options.trainer = true;
    } else if (arg == "--checkpoint-dir" && i + 1 < argc) {
      options.checkpointDir = argv[++i];
    } else if (arg == "--data" && i + 1 < argc) {
      options.dataDir = argv[++i];
    } else if (arg == "--write-data" && i + 1 < argc) {
      options.writeDataDir = argv[++i];
    } else if (arg == "--steps" && i + 1 < argc) {
      // The project's one integer parser: strtoll took "" as 0 and clamped overflow.
      const std::string text = argv[++i];
      const auto parsed = ddp::env::parseInteger(text, 0, kMaxSteps);
      if (!parsed.value) {
        throw ddp::ConfigError(
            ddp::env::describeBadValue("--steps", text, ddp::env::integerExpectation(0, kMaxSteps),
                                       parsed.found, std::string("Usage: ") + kUsage));
      }
      options.steps = *parsed.value;
    } else {
      throw ddp::ConfigError("unknown argument '" + arg + "'; usage: " + kUsage);
    }
  }
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parseOptions(argc, argv);
    if (!options.writeDataDir.empty()) {
      const auto dir = writeDataSet(options.writeDataDir);
      std::cout << "custom_loop: wrote " << (dir / "train.bin").string() << " and "
                << (dir / "test.bin").string() << std::endl;
      return ddp::kExitOk;
    }
    return options.trainer ? runTrainer(options) : runHandWrittenLoop(options);
  } catch (const std::exception& e) {
    // Bad arguments, environment or data (permanent), rendezvous or a lost peer (transient).
    std::cerr << "custom_loop: " << ddp::errorMessage(e) << std::endl;
    ddp::writeErrorFile(e);  // for ddprun's failure report (Note [The error file])
    return ddp::exitCodeFor(e);
  }
}
