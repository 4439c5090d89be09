#include "runtime/train/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <fstream>
#include <numbers>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/torch.h>

#include "runtime/log/logging.h"
#include "runtime/train/checkpointer.h"
#include "runtime/train/distributed_sampler.h"

namespace ddp::train {
namespace {

using Clock = std::chrono::steady_clock;
namespace F = torch::nn::functional;

constexpr const char* kCheckpointFormat = "ddprun-checkpoint-v1";

std::atomic<int> gStopSignal{0};

extern "C" void onStopSignal(int signal) { gStopSignal.store(signal); }

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Cross entropy and correct predictions for logits [N, C] or [N, T, C] against
// targets [N] or [N, T].
std::pair<at::Tensor, at::Tensor> lossAndCorrect(const at::Tensor& logits,
                                                 const at::Tensor& targets,
                                                 torch::nn::functional::CrossEntropyFuncOptions::reduction_t reduction) {
  const auto flatLogits = logits.reshape({-1, logits.size(-1)});
  const auto flatTargets = targets.reshape({-1});
  auto loss = F::cross_entropy(flatLogits, flatTargets,
                               F::CrossEntropyFuncOptions().reduction(reduction));
  return {loss, flatLogits.argmax(1).eq(flatTargets).sum()};
}

std::unique_ptr<torch::optim::Optimizer> makeOptimizer(const OptimizerOptions& o,
                                                       std::vector<at::Tensor> params) {
  if (o.name == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weightDecay));
  }
  if (o.name == "adam") {
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(
                    o.weightDecay));
  }
  if (o.name == "adamw") {
    return std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(
                    o.weightDecay));
  }
  throw ConfigError(fmt::format("optimizer '{}': expected sgd, adam or adamw", o.name));
}

using GenericDict = c10::impl::GenericDict;
GenericDict stringDict() { return GenericDict(c10::StringType::get(), c10::AnyType::get()); }

// Optimizer state as PyTorch's state_dict() shapes it: {"state": {index: {...}},
// "param_groups": [{...}]}, indices in parameter order.
GenericDict optimizerStateDict(torch::optim::Optimizer& optimizer, const OptimizerOptions& o) {
  GenericDict state(c10::IntType::get(), c10::AnyType::get());
  const auto& params = optimizer.param_groups().at(0).params();
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto found = optimizer.state().find(params[i].unsafeGetTensorImpl());
    if (found == optimizer.state().end()) continue;
    auto entry = stringDict();
    if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(found->second.get())) {
      entry.insert("momentum_buffer", sgd->momentum_buffer().detach().cpu().clone());
    } else if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(found->second.get())) {
      entry.insert("step", torch::tensor(static_cast<double>(adam->step()), torch::kFloat32));
      entry.insert("exp_avg", adam->exp_avg().detach().cpu().clone());
      entry.insert("exp_avg_sq", adam->exp_avg_sq().detach().cpu().clone());
    } else if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(found->second.get())) {
      entry.insert("step", torch::tensor(static_cast<double>(adamw->step()), torch::kFloat32));
      entry.insert("exp_avg", adamw->exp_avg().detach().cpu().clone());
      entry.insert("exp_avg_sq", adamw->exp_avg_sq().detach().cpu().clone());
    }
    state.insert(static_cast<std::int64_t>(i), entry);
  }
  auto group = stringDict();
  group.insert("lr", optimizer.param_groups().at(0).options().get_lr());
  group.insert("momentum", o.momentum);
  group.insert("weight_decay", o.weightDecay);
  // Generic lists only: typed ones pickle as calls Python's weights_only load refuses.
  auto betas = c10::impl::GenericList(c10::AnyType::get());
  betas.push_back(o.beta1);
  betas.push_back(o.beta2);
  group.insert("betas", betas);
  group.insert("eps", o.eps);
  auto indices = c10::impl::GenericList(c10::AnyType::get());
  for (std::size_t i = 0; i < params.size(); ++i) indices.push_back(static_cast<std::int64_t>(i));
  group.insert("params", indices);
  auto groups = c10::impl::GenericList(c10::AnyType::get());
  groups.push_back(group);
  auto dict = stringDict();
  dict.insert("name", o.name);
  dict.insert("state", state);
  dict.insert("param_groups", groups);
  return dict;
}

void loadOptimizerState(torch::optim::Optimizer& optimizer, const OptimizerOptions& o,
                        const GenericDict& dict, const c10::Device& device) {
  const auto name = dict.at("name").toStringRef();
  if (name != o.name) {
    throw CheckpointError(fmt::format(
        "the checkpoint holds {} optimizer state, this run uses --optimizer {}; resume with "
        "--optimizer {} or start fresh with --resume none",
        name, o.name, name));
  }
  const auto& params = optimizer.param_groups().at(0).params();
  for (const auto& item : dict.at("state").toGenericDict()) {
    const auto i = item.key().toInt();
    if (i < 0 || i >= static_cast<std::int64_t>(params.size())) {
      throw CheckpointError(fmt::format("optimizer state for parameter {}, the model has {}", i,
                                        params.size()));
    }
    const auto entry = item.value().toGenericDict();
    auto tensor = [&](const char* key) { return entry.at(key).toTensor().to(device).clone(); };
    std::unique_ptr<torch::optim::OptimizerParamState> state;
    if (o.name == "sgd") {
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(tensor("momentum_buffer"));
      state = std::move(s);
    } else if (o.name == "adam") {
      auto s = std::make_unique<torch::optim::AdamParamState>();
      s->step(static_cast<std::int64_t>(entry.at("step").toTensor().item<double>()));
      s->exp_avg(tensor("exp_avg"));
      s->exp_avg_sq(tensor("exp_avg_sq"));
      state = std::move(s);
    } else {
      auto s = std::make_unique<torch::optim::AdamWParamState>();
      s->step(static_cast<std::int64_t>(entry.at("step").toTensor().item<double>()));
      s->exp_avg(tensor("exp_avg"));
      s->exp_avg_sq(tensor("exp_avg_sq"));
      state = std::move(s);
    }
    optimizer.state()[params[i].unsafeGetTensorImpl()] = std::move(state);
  }
}

// Parameters and buffers by name, as Module::state_dict() would list them.
std::vector<std::pair<std::string, at::Tensor>> namedState(torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> state;
  for (const auto& p : module.named_parameters()) state.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) state.emplace_back(b.key(), b.value());
  return state;
}

void loadModelState(torch::nn::Module& module, const GenericDict& saved) {
  torch::NoGradGuard noGrad;
  auto state = namedState(module);
  if (static_cast<std::size_t>(saved.size()) != state.size()) {
    throw CheckpointError(fmt::format(
        "the checkpoint holds {} tensors, the model has {}: it was written for another "
        "model (--model) or model configuration",
        saved.size(), state.size()));
  }
  for (auto& [name, tensor] : state) {
    auto found = saved.find(name);
    if (found == saved.end()) {
      throw CheckpointError(fmt::format("the checkpoint has no tensor '{}': it was written for "
                                        "another model (--model)",
                                        name));
    }
    const auto value = found->value().toTensor();
    if (value.sizes() != tensor.sizes()) {
      throw CheckpointError(fmt::format("'{}' has shape [{}] in the checkpoint, [{}] in the model",
                                        name, fmt::join(value.sizes(), ","), fmt::join(tensor.sizes(), ",")));
    }
    tensor.copy_(value);
  }
}

at::Tensor rngState() {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void setRngState(const at::Tensor& state) {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

void setLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace

void installStopSignalHandlers() {
  struct sigaction action{};
  action.sa_handler = onStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

int stopSignalReceived() { return gStopSignal.load(); }

double learningRate(const ScheduleOptions& schedule, double baseLr, std::int64_t step,
                    std::int64_t totalSteps) {
  if (step < schedule.warmupSteps) {
    return baseLr * static_cast<double>(step + 1) / static_cast<double>(schedule.warmupSteps);
  }
  const auto sinceWarmup = step - schedule.warmupSteps;
  if (schedule.name == "cosine") {
    const auto span = std::max<std::int64_t>(1, totalSteps - schedule.warmupSteps);
    const double progress = std::min(1.0, static_cast<double>(sinceWarmup) / span);
    const double floor = baseLr * schedule.minLrRatio;
    return floor + 0.5 * (baseLr - floor) * (1.0 + std::cos(std::numbers::pi * progress));
  }
  if (schedule.name == "step") {
    return baseLr * std::pow(schedule.gamma, static_cast<double>(sinceWarmup / schedule.stepSize));
  }
  return baseLr;
}

Trainer::Trainer(Distributed& dist, torch::nn::Sequential model, TrainerOptions options)
    : dist_(dist), model_(std::move(model)), options_(std::move(options)) {
  const auto& o = options_;
  if (o.batchSize < 1 || o.gradAccumulation < 1 || o.epochs < 1 || o.maxSteps < 0 ||
      o.logEvery < 1 || o.evalEvery < 0 || o.checkpointEvery < 0 || o.evalBatchSize < 1) {
    throw ConfigError("trainer options out of range (batch size, accumulation, epochs and "
                      "log interval must be >= 1; step counts >= 0)");
  }
  const auto& schedule = o.schedule.name;
  if (schedule != "constant" && schedule != "cosine" && schedule != "step") {
    throw ConfigError(
        fmt::format("lr schedule '{}': expected constant, cosine or step", schedule));
  }
  if (o.schedule.name == "step" && o.schedule.stepSize < 1) {
    throw ConfigError("lr-step-size must be >= 1");
  }
}

EvalMetrics Trainer::evaluate(const Examples& data) {
  torch::NoGradGuard noGrad;
  model_->eval();
  const auto n = data.inputs.size(0);
  const int rank = dist_.rank(), world = dist_.worldSize();
  const auto begin = n * rank / world, end = n * (rank + 1) / world;
  double lossSum = 0, correct = 0, count = 0;
  for (std::int64_t i = begin; i < end; i += options_.evalBatchSize) {
    const auto stop = std::min(i + options_.evalBatchSize, end);
    auto inputs = data.inputs.slice(0, i, stop).to(dist_.device);
    auto targets = data.targets.slice(0, i, stop).to(dist_.device);
    auto [loss, right] = lossAndCorrect(model_->forward(inputs), targets, torch::kSum);
    lossSum += loss.item<double>();
    correct += right.item<double>();
    count += static_cast<double>(targets.numel());
  }
  std::vector<at::Tensor> sums{
      torch::tensor({lossSum, correct, count}, torch::kFloat64).to(dist_.device)};
  dist_.group->allreduce(sums)->wait();
  model_->train();
  const auto total = sums[0].cpu();
  const double targets = std::max(1.0, total[2].item<double>());
  return {total[0].item<double>() / targets, total[1].item<double>() / targets};
}

TrainResult Trainer::fit(const Examples& train, const Examples& test) {
  const auto& o = options_;
  const auto start = Clock::now();
  const int rank = dist_.rank(), world = dist_.worldSize();
  auto& group = *dist_.group;
  TrainResult result;

  DistributedSampler sampler(train.inputs.size(0), world, rank,
                             {.shuffle = o.shuffle, .dropLast = o.dropLast, .seed = o.seed});
  const std::int64_t samplesPerStep = o.batchSize * o.gradAccumulation;
  const std::int64_t stepsPerEpoch = sampler.numSamples() / samplesPerStep;
  if (stepsPerEpoch < 1) {
    throw ConfigError(fmt::format(
        "each rank's shard holds {} samples ({} in the training set over {} ranks), fewer than "
        "one step needs (batch-size {} x grad-accumulation {}); lower the batch size",
        sampler.numSamples(), train.inputs.size(0), world, o.batchSize, o.gradAccumulation));
  }
  const std::int64_t totalSteps = o.maxSteps > 0 ? o.maxSteps : o.epochs * stepsPerEpoch;

  // Resume before wrapping: DistributedDataParallel broadcasts rank 0's weights anyway,
  // and every rank restores the same optimizer state.
  std::optional<Checkpointer> checkpointer;
  if (!o.checkpointDir.empty()) {
    checkpointer.emplace(CheckpointerOptions{o.checkpointDir, o.keepCheckpoints}, dist_.group,
                         dist_.device);
  }
  std::optional<LoadedCheckpoint> loaded;
  if (checkpointer) {
    loaded = checkpointer->load(o.resume);
  } else if (o.resume != "auto" && o.resume != "none") {
    Checkpointer reader(CheckpointerOptions{}, dist_.group, dist_.device);
    loaded = reader.load(o.resume);
  }
  std::int64_t step = 0;
  GenericDict payload = stringDict();
  if (loaded) {
    payload = loaded->payload.toGenericDict();
    if (payload.at("format").toStringRef() != kCheckpointFormat) {
      throw CheckpointError(fmt::format("'{}' is not a ddprun checkpoint (format '{}')",
                                        loaded->info.path, payload.at("format").toStringRef()));
    }
    loadModelState(*model_, payload.at("model").toGenericDict());
    step = payload.at("step").toInt();
    result.resumedFrom = step;
    const auto savedWorld = payload.at("world_size").toInt();
    const auto rngs = payload.at("rng").toGenericDict().at("cpu").toList();
    if (savedWorld == world) {
      setRngState(rngs.get(rank).toTensor());
    } else {
      log::warn("train", "event=world_size_changed checkpoint_world_size={} world_size={} "
                "(the data order differs from the original run from here on)",
                savedWorld, world);
    }
    if (rank == 0) {
      log::info("train", "event=resumed step={} epoch={} path={}", step,
                payload.at("epoch").toInt(), loaded->info.path);
    }
  }

  DistributedDataParallel ddpModel(model_, dist_.group, o.ddp);
  auto optimizer = makeOptimizer(o.optimizer, model_->parameters());
  if (loaded) {
    loadOptimizerState(*optimizer, o.optimizer, payload.at("optimizer").toGenericDict(),
                       dist_.device);
  }

  std::ofstream metrics;
  if (rank == 0 && !o.metricsFile.empty()) {
    metrics.open(o.metricsFile, std::ios::app);
    if (!metrics) throw ConfigError(fmt::format("cannot open --metrics-file '{}'", o.metricsFile));
  }
  auto record = [&](const nlohmann::json& line) {
    if (metrics.is_open()) metrics << line.dump() << std::endl;
  };

  // The checkpoint of the current state; collective (every rank's RNG state is in it).
  auto saveCheckpoint = [&](std::int64_t epoch) {
    std::vector<at::Tensor> mine{rngState().to(dist_.device)};
    std::vector<std::vector<at::Tensor>> all(1);
    for (int r = 0; r < world; ++r) all[0].push_back(torch::empty_like(mine[0]));
    group.allgather(all, mine)->wait();
    if (rank != 0) return;
    auto model = stringDict();
    for (const auto& [name, tensor] : namedState(*model_)) {
      model.insert(name, tensor.detach().cpu().clone());
    }
    auto rngs = c10::impl::GenericList(c10::AnyType::get());
    for (auto& t : all[0]) rngs.push_back(t.cpu());
    auto rng = stringDict();
    rng.insert("cpu", rngs);
    auto samplerState = stringDict();
    samplerState.insert("epoch", epoch);
    samplerState.insert("start", (step % stepsPerEpoch) * samplesPerStep);
    samplerState.insert("seed", static_cast<std::int64_t>(o.seed));
    samplerState.insert("num_samples", sampler.numSamples());
    auto out = stringDict();
    out.insert("format", kCheckpointFormat);
    out.insert("model", model);
    out.insert("optimizer", optimizerStateDict(*optimizer, o.optimizer));
    out.insert("step", step);
    out.insert("epoch", epoch);
    out.insert("sampler", samplerState);
    out.insert("rng", rng);
    out.insert("world_size", static_cast<std::int64_t>(world));
    out.insert("config", o.configText);
    checkpointer->save(step, out);
  };

  if (rank == 0) {
    log::info("train", "event=start steps={} steps_per_epoch={} batch_per_rank={} "
              "grad_accumulation={} global_batch={} optimizer={} lr={} schedule={} from_step={}",
              totalSteps, stepsPerEpoch, o.batchSize, o.gradAccumulation,
              samplesPerStep * world, o.optimizer.name, o.optimizer.lr, o.schedule.name, step);
  }

  at::Tensor epochIndices;
  std::int64_t indicesEpoch = -1;
  c10::intrusive_ptr<c10d::Work> pendingStop;
  at::Tensor stopFlag;
  double windowLoss = 0;
  std::int64_t windowSteps = 0, runSteps = 0;
  auto windowStart = Clock::now();
  const auto loopStart = Clock::now();

  while (step < totalSteps) {
    const std::int64_t epoch = step / stepsPerEpoch;
    if (epoch != indicesEpoch) {
      sampler.setEpoch(epoch);
      epochIndices = sampler.indices();
      indicesEpoch = epoch;
    }
    const double lr = learningRate(o.schedule, o.optimizer.lr, step, totalSteps);
    setLearningRate(*optimizer, lr);

    const std::int64_t first = (step % stepsPerEpoch) * samplesPerStep;
    optimizer->zero_grad();
    double stepLoss = 0;
    for (int micro = 0; micro < o.gradAccumulation; ++micro) {
      const auto at = first + micro * o.batchSize;
      const auto indices = epochIndices.slice(0, at, at + o.batchSize);
      auto inputs = train.inputs.index_select(0, indices).to(dist_.device);
      auto targets = train.targets.index_select(0, indices).to(dist_.device);
      auto backward = [&] {
        auto [loss, unused] = lossAndCorrect(ddpModel.forward(inputs), targets, torch::kMean);
        (loss / o.gradAccumulation).backward();  // the last one averages over the ranks
        stepLoss += loss.item<double>() / o.gradAccumulation;
      };
      if (micro + 1 < o.gradAccumulation) {
        auto guard = ddpModel.noSync();
        backward();
      } else {
        backward();
      }
    }
    if (o.clipGradNorm > 0) torch::nn::utils::clip_grad_norm_(model_->parameters(), o.clipGradNorm);
    optimizer->step();
    ++step;
    ++runSteps;
    windowLoss += stepLoss;
    ++windowSteps;

    // Note [Stopping on a signal]: the previous step's vote decides; this step's goes out.
    int stopSignal = 0;
    if (pendingStop) {
      pendingStop->wait();
      stopSignal = static_cast<int>(stopFlag.cpu().item<std::int64_t>());
    }
    stopFlag = torch::tensor({static_cast<std::int64_t>(stopSignalReceived())}).to(dist_.device);
    std::vector<at::Tensor> flagList{stopFlag};
    pendingStop = group.allreduce(flagList, c10d::AllreduceOptions{c10d::ReduceOp::MAX});

    if (step % o.logEvery == 0 || step == totalSteps) {
      // The interval's mean loss over all ranks.
      std::vector<at::Tensor> lossSum{
          torch::tensor({windowLoss / windowSteps}, torch::kFloat64).to(dist_.device)};
      group.allreduce(lossSum)->wait();
      const double wallWindow = seconds(Clock::now() - windowStart);
      if (rank == 0) {
        const double loss = lossSum[0].cpu().item<double>() / world;
        const double samplesPerS = windowSteps * samplesPerStep * world / wallWindow;
        const double stepMs = 1000 * wallWindow / windowSteps;
        log::info("train", "epoch={} step={}/{} loss={:.4f} lr={:.5g} samples_per_s={:.0f} "
                  "step_ms={:.2f}",
                  epoch, step, totalSteps, loss, lr, samplesPerS, stepMs);
        record({{"kind", "train"}, {"epoch", epoch}, {"step", step}, {"loss", loss}, {"lr", lr},
                {"samples_per_s", samplesPerS}, {"step_ms", stepMs}});
      }
      windowLoss = 0;
      windowSteps = 0;
      windowStart = Clock::now();
    }
    const bool lastStep = step == totalSteps;
    if (o.evalEvery > 0 && step % o.evalEvery == 0 && !lastStep) {
      const auto m = evaluate(test);
      if (rank == 0) {
        log::info("train", "event=eval step={} test_loss={:.4f} test_accuracy={:.4f}", step,
                  m.loss, m.accuracy);
        record({{"kind", "eval"}, {"step", step}, {"test_loss", m.loss},
                {"test_accuracy", m.accuracy}});
      }
    }
    if (stopSignal != 0) {
      result.stoppedBySignal = stopSignal;
      if (rank == 0) {
        log::warn("train", "event=stopping signal={} step={} (checkpointing, then exiting)",
                  strsignal(stopSignal), step);
      }
      break;
    }
    if (checkpointer && o.checkpointEvery > 0 && step % o.checkpointEvery == 0 && !lastStep) {
      saveCheckpoint(step / stepsPerEpoch);
    }
  }
  if (pendingStop) pendingStop->wait();
  const double trainSeconds = seconds(Clock::now() - loopStart);
  if (checkpointer) saveCheckpoint(step / stepsPerEpoch);

  result.steps = step;
  result.samplesPerSecond = trainSeconds > 0 ? runSteps * samplesPerStep * world / trainSeconds : 0;
  if (result.stoppedBySignal == 0) {
    result.test = evaluate(test);
    if (rank == 0) {
      record({{"kind", "final"}, {"step", step}, {"test_loss", result.test.loss},
              {"test_accuracy", result.test.accuracy}, {"samples_per_s", result.samplesPerSecond}});
    }
  }
  result.wallSeconds = seconds(Clock::now() - start);
  return result;
}

}  // namespace ddp::train
