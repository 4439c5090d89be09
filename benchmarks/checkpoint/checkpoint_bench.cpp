// Checkpoint save and load, timed through ddprun's own Checkpointer (benchmarks/README.md,
// "Checkpoints"). One rank (a Gloo group of one), a synthetic model of about --params
// parameters as square Linear layers, with Adam's state after one step, so the file
// holds about 3x the parameters' bytes. Per repeat, one after the other:
//   sync    Checkpointer::save: snapshot of device tensors (none here), write, fsync,
//           rename, manifest; the training thread waits for all of it
//   async   Checkpointer::saveAsync (blocked: the snapshot into host buffers) and
//           finishSave (total: snapshot to manifest)
//   read    the newest checkpoint's bytes read cold (page cache dropped for the file):
//           the floor under a load
//   load    Checkpointer::load("auto"), cold: pick, read, verify the CRC, broadcast,
//           unpickle
// Prints one line, CHECKPOINT_BENCH <json>, that run_checkpoint_benchmark.py reads; the
// newest checkpoint stays in --dir for the Python rows.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "runtime/ddprun.h"
#include "runtime/train/checkpointer.h"
#include "runtime/train/train_state.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

// Drops `path` from the page cache, so that the next read comes from the disk. The file
// was fsync'ed: its pages are clean and DONTNEED drops them.
void dropFromCache(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

double readCold(const fs::path& path) {
  dropFromCache(path);
  const auto start = Clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path.string());
  std::vector<char> bytes(fs::file_size(path));
  std::size_t at = 0;
  while (at < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + at, bytes.size() - at);
    if (n <= 0) throw std::runtime_error("cannot read " + path.string());
    at += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return secondsSince(start);
}

// Square Linear layers of width `width` until about `params` parameters.
torch::nn::Sequential syntheticModel(std::int64_t params, std::int64_t width) {
  torch::nn::Sequential model;
  const std::int64_t perLayer = width * width + width;
  const std::int64_t layers = std::max<std::int64_t>(1, (params + perLayer / 2) / perLayer);
  for (std::int64_t layer = 0; layer < layers; ++layer) {
    model->push_back(torch::nn::Linear(width, width));
  }
  return model;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options cli("checkpoint_bench", "ddprun's checkpoint save and load, timed");
  cli.add_options()("params", "parameters of the synthetic model",
                    cxxopts::value<std::int64_t>()->default_value("25000000"))(
      "width", "width of its square layers", cxxopts::value<std::int64_t>()->default_value("2048"))(
      "dir", "checkpoint directory (emptied first)", cxxopts::value<std::string>())(
      "repeats", "rounds of every row", cxxopts::value<int>()->default_value("3"))("help",
                                                                                   "this text");
  const auto args = cli.parse(argc, argv);
  if (args.count("help") || !args.count("dir")) {
    std::cout << cli.help() << std::endl;
    return args.count("help") ? 0 : 2;
  }
  const fs::path dir = args["dir"].as<std::string>();
  fs::remove_all(dir);
  fs::create_directories(dir);

  auto dist = ddp::init(ddp::InitOptions{.backend = "gloo"});
  torch::manual_seed(0);
  auto model = syntheticModel(args["params"].as<std::int64_t>(), args["width"].as<std::int64_t>());
  std::int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  ddp::train::OptimizerOptions optimizerOptions;
  optimizerOptions.name = "adam";
  auto optimizer = ddp::train::makeOptimizer(optimizerOptions, model->parameters());
  for (auto& p : model->parameters()) p.mutable_grad() = torch::randn_like(p);
  optimizer->step();  // Adam's exp_avg and exp_avg_sq exist from here

  ddp::train::Checkpointer checkpointer({.dir = dir.string(), .keepLast = 1}, dist.group,
                                        dist.device);
  const std::vector<at::Tensor> rng{ddp::train::cpuRngState()};
  const auto payloadAt = [&](std::int64_t step) {
    return ddp::train::makeCheckpointPayload({*model, *optimizer, optimizerOptions},
                                             {.step = step, .worldSize = 1}, rng, "");
  };

  // As the Trainer does after its first step: the snapshot buffers exist before the first
  // background save.
  checkpointer.reserveSnapshot(payloadAt(0));
  checkpointer.finishReserving();

  nlohmann::json result = {{"params", params}};
  std::vector<double> sync, blocked, total, read, load;
  std::int64_t step = 0;
  std::string newest;
  for (int r = 0; r < args["repeats"].as<int>(); ++r) {
    ++step;  // (not inside the calls: the order arguments are evaluated in is unspecified)
    const auto saved = checkpointer.save(step, payloadAt(step));
    sync.push_back(seconds(saved->total));
    result["bytes"] = saved->bytes;

    ++step;
    checkpointer.saveAsync(step, payloadAt(step));
    const auto written = checkpointer.finishSave();
    blocked.push_back(seconds(written->blocked));
    total.push_back(seconds(written->total));
    newest = written->path;

    read.push_back(readCold(newest));
    dropFromCache(newest);
    const auto start = Clock::now();
    const auto loaded = checkpointer.load("auto");
    load.push_back(secondsSince(start));
    if (!loaded || loaded->info.step != step) {
      std::cerr << "loaded the wrong checkpoint" << std::endl;
      return 1;
    }
  }
  result["sync_save_s"] = sync;
  result["async_blocked_s"] = blocked;
  result["async_total_s"] = total;
  result["read_s"] = read;
  result["load_s"] = load;
  result["checkpoint"] = newest;
  std::cout << "CHECKPOINT_BENCH " << result.dump() << std::endl;
  return 0;
}
