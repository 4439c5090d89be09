#include "runtime/train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fstream>
#include <limits>
#include <new>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "runtime/env/value_parser.h"
#include "runtime/env/variables.h"
#include "runtime/log/logging.h"
#include "runtime/memory/out_of_memory.h"
#include "runtime/metrics/training_metrics.h"
#include "runtime/train/checkpointer.h"
#include "runtime/train/distributed_sampler.h"
#include "runtime/train/prefetcher.h"
#include "runtime/train/run_journal.h"
#include "runtime/train/train_state.h"

namespace ddp::train {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int> gStopSignal{0};
std::atomic<bool> gStopIsGraceful{false};  // a GracefulStop exists

// Note [Stopping on a signal]. Only async-signal-safe calls here (_exit, lock-free atomics).
extern "C" void onStopSignal(int signal) {
  if (!gStopIsGraceful.load()) _exit(128 + signal);
  gStopSignal.store(signal);
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The user's module registered as "module", so DistributedDataParallel names parameters
// "module.<name>" in its errors, as PyTorch's DDP does; checkpoints use the user's names.
class ForwardingModule : public torch::nn::Module {
 public:
  explicit ForwardingModule(TrainableModel model) : model_(std::move(model)) {
    register_module("module", model_.modulePtr());
  }
  at::Tensor forward(const at::Tensor& input) { return model_.forward(input); }

 private:
  TrainableModel model_;
};

// Note [Stopping on a signal]: each step sends this rank's vote and reads the previous
// step's outcome, so the wait overlaps a step of compute.
// What the ranks agree on each step, one step late: a stop signal, and whether rank 0's
// clock says a checkpoint is due (--checkpoint-every-seconds: the ranks' clocks differ).
struct StepVote {
  int signal = 0;  // 0: none
  bool checkpointDue = false;
};

class StopVote {
 public:
  StopVote(c10d::ProcessGroup& group, c10::Device device) : group_(group), device_(device) {}
  // Never waits: unwinding after a lost peer must not block on (or rethrow from) the vote
  // that went out with the failed step; the group's teardown ends it.
  ~StopVote() = default;

  // What all ranks agreed on one step ago; sends this step's vote.
  StepVote exchange(const StepVote& local) {
    StepVote agreed;
    if (pending_) {
      const health::PhaseScope waiting(health::Phase::kCommunication);
      pending_->wait();
      const auto votes = flags_.cpu();
      agreed.signal = static_cast<int>(votes[0].item<std::int64_t>());
      agreed.checkpointDue = votes[1].item<std::int64_t>() != 0;
    }
    flags_ = torch::tensor({static_cast<std::int64_t>(local.signal),
                            static_cast<std::int64_t>(local.checkpointDue)})
                 .to(device_);
    std::vector<at::Tensor> flags{flags_};
    pending_ = group_.allreduce(flags, c10d::AllreduceOptions{c10d::ReduceOp::MAX});
    return agreed;
  }
  void finish() {
    auto pending = std::move(pending_);
    if (pending) pending->wait();
  }

 private:
  c10d::ProcessGroup& group_;
  c10::Device device_;
  c10::intrusive_ptr<c10d::Work> pending_;
  at::Tensor flags_;
};

double unixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// 16 hex digits, new for every fit(): the runs appended to one metrics file tell apart.
std::string newRunId() {
  std::random_device random;
  return fmt::format("{:08x}{:08x}", random(), random());
}

// Rank 0's JSON lines (--metrics-file); a no-op elsewhere or without a file. Each fit()
// begins with a "run" record (run id, start time, world size, the resolved configuration)
// and every record carries the run id and its time (scripts/plot_metrics.py reads them).
class MetricsFile {
 public:
  explicit MetricsFile(const std::string& path) : runId_(newRunId()) {
    if (path.empty()) return;
    out_.open(path, std::ios::app);
    if (!out_) {
      throw ConfigError(
          fmt::format("cannot open the metrics file '{}' for appending: {}. Check "
                      "that its directory exists and is writable.",
                      path, std::strerror(errno)));
    }
  }
  void start(int worldSize, const std::string& configText, std::int64_t fromStep) {
    if (!out_.is_open()) return;
    const double now = unixNow();
    const auto t = static_cast<std::time_t>(now);
    std::tm utc{};
    gmtime_r(&t, &utc);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &utc);
    // The configuration as an object when it is JSON (ddptrain's), else its text.
    auto config = nlohmann::json::parse(configText, nullptr, false);
    if (config.is_discarded()) config = configText;
    record({{"kind", "run"},
            {"start_time", fmt::format("{}.{:03d}Z", when,
                                       static_cast<int>((now - static_cast<double>(t)) * 1000))},
            {"start_unix", now},
            {"world_size", worldSize},
            {"from_step", fromStep},
            {"config", config}});
  }
  void record(nlohmann::json line) {
    if (!out_.is_open()) return;
    line["run_id"] = runId_;
    if (!line.contains("time")) line["time"] = unixNow();
    out_ << line.dump() << std::endl;
  }

 private:
  std::string runId_;
  std::ofstream out_;
};

// The shape of one sample of `data` (inputs and targets without the batch dimension).
std::string sampleShape(Dataset& data) {
  const auto batch = data.read(torch::zeros({1}, torch::kLong));
  return fmt::format("inputs [{}], targets [{}]", fmt::join(batch.inputs.sizes().slice(1), ","),
                     fmt::join(batch.targets.sizes().slice(1), ","));
}

// Before the first step, not at the end: a test split must hold samples of the training
// set's shape (one sample of each is read).
void checkSameSampleShape(Dataset& train, Dataset& test) {
  if (train.size() == 0 || test.size() == 0) return;
  const auto trainShape = sampleShape(train), testShape = sampleShape(test);
  if (trainShape == testShape) return;
  throw ConfigError(fmt::format(
      "the test set's samples have {}, the training set's {}: expected the same shape. Give a "
      "test split of the same data format",
      testShape, trainShape));
}

// Whether every gradient of `parameters` is finite; the same answer on every rank once
// DistributedDataParallel has reduced them (Note [Non-finite steps]).
bool gradientsFinite(const std::vector<at::Tensor>& parameters) {
  std::vector<at::Tensor> grads;
  for (const auto& p : parameters) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return true;
  return torch::stack(at::_foreach_norm(grads)).sum().isfinite().item<bool>();
}

// An allocator's error as a TrainingFailedError (exit 3) that says what to lower; any
// other error as it is. `step` is the one that failed, counted from 1.
std::exception_ptr asTrainingFailure(std::exception_ptr error, std::int64_t step,
                                     std::int64_t batchSize) {
  auto failure = [&](const char* memory, const std::string& what) {
    return std::make_exception_ptr(TrainingFailedError(fmt::format(
        "out of {} memory at step {} (batch-size {} per rank): {}. Lower --batch-size (raise "
        "--grad-accumulation to keep the global batch), --prefetch-batches or the model size, "
        "or give the pod more memory",
        memory, step, batchSize, what)));
  };
  try {
    std::rethrow_exception(error);
  } catch (const c10::OutOfMemoryError& e) {
    return failure("device", e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return failure("host", "std::bad_alloc");
  } catch (const c10::Error& e) {
    if (memory::hostOutOfMemoryDetail(e)) return failure("host", e.what_without_backtrace());
  } catch (...) {
  }
  return error;
}

// Note [Restart budget]: records how this attempt failed; throws RestartsExhaustedError
// when this retryable failure without a new checkpoint spends the budget.
void recordFailure(RunJournal& journal, const std::exception_ptr& error, std::int64_t step,
                   std::int64_t checkpointStep, int maxStalled) {
  std::string cause;
  int code = kExitTransient;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    cause = errorMessage(e);
    code = exitCodeFor(e);
  } catch (...) {
    cause = "an exception that is not a std::exception";
  }
  journal.end(code, cause, step, checkpointStep);
  const int stalled = journal.stalledFailuresBefore();
  if (maxStalled == 0 || !journal.entries().back().stalledFailure() || stalled < maxStalled) {
    return;
  }
  RestartsExhaustedError exhausted(fmt::format(
      "{} attempts in a row failed without a new checkpoint, and so did this one: {}. Exiting "
      "{} (permanent) so that the job stops restarting; the attempts are in {}. Fix the cause "
      "and restart the job (progress resets the count), or allow more with "
      "--max-stalled-restarts",
      stalled, cause, kExitRestartsExhausted, journal.path()));
  journal.end(kExitRestartsExhausted, exhausted.what(), step, checkpointStep);
  throw exhausted;
}

// The mean training loss since the last log line, over all ranks.
struct LossWindow {
  double lossSum = 0;
  std::int64_t steps = 0;
  Clock::time_point start = Clock::now();
  // Time this rank waited for collectives until the window began (Note [Stragglers]).
  double waitedBefore = metrics::phaseSeconds(health::phaseName(health::Phase::kCommunication));
};

}  // namespace

// One fit(): what the loop reads and changes.
struct Trainer::Run {
  DistributedSampler sampler;
  std::int64_t samplesPerStep = 0;
  std::int64_t stepsPerEpoch = 0;
  std::int64_t totalSteps = 0;
  std::int64_t step = 0;
  std::int64_t scheduledEpoch = -1;         // the epoch whose batches the prefetcher holds
  std::int64_t checkpointStep = -1;         // the newest checkpoint of this run, -1: none
  std::optional<CheckpointInfo> lastSaved;  // rank 0: what this attempt saved last
  Clock::time_point lastCheckpointAt = Clock::now();  // rank 0: --checkpoint-every-seconds
  std::int64_t skippedSteps = 0;                      // Note [Non-finite steps]
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::optional<Checkpointer> checkpointer;
  std::shared_ptr<ForwardingModule> forwarding;
  std::unique_ptr<DistributedDataParallel<std::shared_ptr<ForwardingModule>>> ddp;
  BatchPrefetcher prefetcher;
  MetricsFile metrics;
  LossWindow window;
  std::vector<char> pastStragglerLimit;  // per rank, at the last judged window (Note [Stragglers])

  Run(const TrainerOptions& o, Distributed& dist, const TrainableModel& model, Dataset& train)
      : sampler(train.size(), dist.worldSize(), dist.rank(),
                {.shuffle = o.shuffle, .dropLast = o.dropLast, .seed = o.seed}),
        samplesPerStep(o.batchSize * o.gradAccumulation),
        stepsPerEpoch(sampler.numSamples() / samplesPerStep),
        optimizer(makeOptimizer(o.optimizer, model.module().parameters())),
        forwarding(std::make_shared<ForwardingModule>(model)),
        prefetcher(train, o.prefetchBatches),
        metrics(dist.rank() == 0 ? o.metricsFile : "") {
    if (stepsPerEpoch < 1) {
      throw ConfigError(fmt::format(
          "each rank's shard holds {} samples ({} in the training set over {} ranks), fewer "
          "than one step needs (batch-size {} x grad-accumulation {}); lower the batch size",
          sampler.numSamples(), train.size(), dist.worldSize(), o.batchSize, o.gradAccumulation));
    }
    totalSteps = o.maxSteps > 0 ? o.maxSteps : o.epochs * stepsPerEpoch;
    if (!o.checkpointDir.empty()) {
      checkpointer.emplace(CheckpointerOptions{.dir = o.checkpointDir,
                                               .keepLast = o.keepCheckpoints,
                                               .fileMode = o.checkpointFileMode},
                           dist.group, dist.device);
    }
  }

  // Hands the prefetcher every remaining micro-batch of the current epoch (Note [Reading
  // ahead]), once per epoch.
  void scheduleEpoch(std::int64_t batchSize) {
    const std::int64_t epoch = step / stepsPerEpoch;
    if (epoch == scheduledEpoch) return;
    sampler.setEpoch(epoch);
    const auto indices = sampler.indices();
    const std::int64_t epochEnd = std::min((epoch + 1) * stepsPerEpoch, totalSteps);
    std::vector<at::Tensor> batches;
    for (std::int64_t s = step; s < epochEnd; ++s) {
      const std::int64_t first = (s % stepsPerEpoch) * samplesPerStep;
      for (std::int64_t at = first; at < first + samplesPerStep; at += batchSize) {
        batches.push_back(indices.slice(0, at, at + batchSize));
      }
    }
    prefetcher.schedule(std::move(batches));
    scheduledEpoch = epoch;
  }
};

double EvalMetrics::value(const std::string& name) const {
  if (auto it = values.find(name); it != values.end()) return it->second;
  std::string known;
  for (const auto& [key, unused] : values) known += (known.empty() ? "" : ", ") + key;
  throw ConfigError(fmt::format("no metric '{}' in this evaluation; it has: {}", name,
                                known.empty() ? "none" : known));
}

void installStopSignalHandlers() {
  struct sigaction action {};
  action.sa_handler = onStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

int stopSignalReceived() { return gStopSignal.load(); }

GracefulStop::GracefulStop() { gStopIsGraceful.store(true); }
// A signal that came inside stays recorded: the caller is stopping because of it.
GracefulStop::~GracefulStop() { gStopIsGraceful.store(false); }

Trainer::Trainer(Distributed& dist, TrainableModel model, TrainerOptions options,
                 Objective objective)
    : dist_(dist),
      model_(std::move(model)),
      options_(std::move(options)),
      objective_(std::move(objective)) {
  const auto& o = options_;
  auto atLeast = [](const char* name, std::int64_t value, std::int64_t min) {
    if (value >= min) return;
    throw ConfigError(
        fmt::format("TrainerOptions::{} = {}: expected at least {}.", name, value, min));
  };
  atLeast("batchSize", o.batchSize, 1);
  atLeast("gradAccumulation", o.gradAccumulation, 1);
  atLeast("epochs", o.epochs, 1);
  atLeast("maxSteps", o.maxSteps, 0);
  atLeast("logEvery", o.logEvery, 1);
  atLeast("evalEvery", o.evalEvery, 0);
  atLeast("evalBatchSize", o.evalBatchSize, 1);
  atLeast("checkpointEvery", o.checkpointEvery, 0);
  atLeast("maxStalledRestarts", o.maxStalledRestarts, 0);
  atLeast("nonFiniteSkipLimit", o.nonFiniteSkipLimit, 0);
  if (!(o.stragglerThreshold > 0)) {  // NaN too
    throw ConfigError(fmt::format(
        "TrainerOptions::stragglerThreshold = {}: expected a fraction above 0 (0.3: a rank "
        "30% slower than the median is named).",
        o.stragglerThreshold));
  }
  if (!(o.checkpointEverySeconds >= 0) || std::isinf(o.checkpointEverySeconds)) {  // NaN too
    throw ConfigError(
        fmt::format("TrainerOptions::checkpointEverySeconds = {}: expected seconds, 0 (no timed "
                    "checkpoints) or more.",
                    o.checkpointEverySeconds));
  }
  if (o.checkpointFileMode > 0777) {
    throw ConfigError(fmt::format(
        "TrainerOptions::checkpointFileMode {:o}: expected permission bits, 0 to 0777 (octal).",
        o.checkpointFileMode));
  }
  // samplesPerStep = batchSize x gradAccumulation must not overflow (it divides the shard).
  if (o.batchSize > std::numeric_limits<std::int64_t>::max() / o.gradAccumulation) {
    throw ConfigError(
        fmt::format("TrainerOptions::batchSize {} x gradAccumulation {} overflows "
                    "64 bits: expected a product a data set can hold. Lower them.",
                    o.batchSize, o.gradAccumulation));
  }
  checkSchedule(o.schedule);
  if (!objective_.loss) {
    throw ConfigError(
        "the trainer's Objective has no loss: set Objective::loss, or pass "
        "classification() or regression().");
  }
}

EvalMetrics Trainer::evaluate(Dataset& data) {
  torch::NoGradGuard noGrad;
  model_.module().eval();
  const auto n = data.size();
  const int rank = dist_.rank(), world = dist_.worldSize();
  const auto begin = n * rank / world, end = n * (rank + 1) / world;
  // [loss sum, targets, one sum per metric]
  std::vector<double> sums(2 + objective_.metrics.size(), 0.0);
  for (std::int64_t i = begin; i < end; i += options_.evalBatchSize) {
    const auto stop = std::min(i + options_.evalBatchSize, end);
    const auto batch = data.read(torch::arange(i, stop, torch::kLong));
    const auto inputs = batch.inputs.to(dist_.device), targets = batch.targets.to(dist_.device);
    const auto output = model_.forward(inputs);
    const auto count = static_cast<double>(targets.numel());
    sums[0] += objective_.loss(output, targets).item<double>() * count;
    sums[1] += count;
    for (std::size_t m = 0; m < objective_.metrics.size(); ++m) {
      sums[2 + m] += objective_.metrics[m].sum(output, targets).item<double>();
    }
  }
  std::vector<at::Tensor> total{torch::tensor(sums, torch::kFloat64).to(dist_.device)};
  dist_.group->allreduce(total)->wait();
  model_.module().train();
  const auto reduced = total[0].cpu();
  const double targets = std::max(1.0, reduced[1].item<double>());
  EvalMetrics metrics{reduced[0].item<double>() / targets, {}};
  for (std::size_t m = 0; m < objective_.metrics.size(); ++m) {
    metrics.values[objective_.metrics[m].name] = reduced[2 + m].item<double>() / targets;
  }
  return metrics;
}

std::int64_t Trainer::resume(Run& run) {
  const auto& o = options_;
  std::optional<LoadedCheckpoint> loaded;
  if (run.checkpointer) {
    loaded = run.checkpointer->load(o.resume);
  } else if (o.resume != "auto" && o.resume != "none") {
    loaded = Checkpointer(CheckpointerOptions{}, dist_.group, dist_.device).load(o.resume);
  }
  if (!loaded) return -1;
  const auto progress = restoreCheckpoint(loaded->payload, loaded->info.path,
                                          {model_.module(), *run.optimizer, o.optimizer},
                                          dist_.rank(), dist_.worldSize(), dist_.device);
  run.step = progress.step;
  if (run.checkpointer) run.checkpointStep = loaded->info.step;
  if (dist_.rank() == 0) {
    // The world size it was written at: after an elastic re-formation they differ.
    log::info("train", "event=resumed step={} epoch={} world_size={} saved_world_size={} path={}",
              progress.step, progress.epoch, dist_.worldSize(), progress.worldSize,
              loaded->info.path);
  }
  return progress.step;
}

// Note [One step].
double Trainer::trainStep(Run& run) {
  const auto& o = options_;
  run.scheduleEpoch(o.batchSize);
  run.optimizer->zero_grad();
  double stepLoss = 0;
  for (int micro = 0; micro < o.gradAccumulation; ++micro) {
    const Batch batch = [&] {
      const health::PhaseScope data(health::Phase::kData);
      return run.prefetcher.next();
    }();
    const auto inputs = batch.inputs.to(dist_.device);
    const auto targets = batch.targets.to(dist_.device);
    auto backward = [&] {
      const health::PhaseScope forwardBackward(health::Phase::kForwardBackward);
      auto loss = objective_.loss(run.ddp->forward(inputs), targets);
      // Note [Non-finite steps]: a NaN/Inf loss reaches every rank as NaN gradients.
      const auto poisoned =
          torch::where(torch::isfinite(loss), loss, torch::full_like(loss, std::nan("")));
      (poisoned / o.gradAccumulation).backward();  // the last one averages over the ranks
      stepLoss += loss.item<double>() / o.gradAccumulation;
    };
    if (micro + 1 < o.gradAccumulation) {
      auto guard = run.ddp->noSync();
      backward();
    } else {
      backward();
    }
  }
  const health::PhaseScope optimizing(health::Phase::kOptimizer);
  const auto parameters = model_.module().parameters();
  const bool finite =
      o.clipGradNorm > 0
          ? std::isfinite(torch::nn::utils::clip_grad_norm_(parameters, o.clipGradNorm))
          : gradientsFinite(parameters);
  if (!finite) {
    skipOrStop(run, stepLoss);
    return stepLoss;
  }
  run.optimizer->step();
  return stepLoss;
}

// Note [Non-finite steps]: every rank comes here for the same step.
void Trainer::skipOrStop(Run& run, double localLoss) {
  const auto& o = options_;
  const std::int64_t epoch = run.step / run.stepsPerEpoch;
  const std::int64_t first = (run.step % run.stepsPerEpoch) * run.samplesPerStep;
  const auto where = fmt::format(
      "step {} (epoch {}, positions [{}, {}) of each rank's shard in the sampler's order)",
      run.step + 1, epoch, first, first + run.samplesPerStep);
  const auto local =
      std::isfinite(localLoss)
          ? std::string(
                "this rank's loss was finite: the non-finite value came "
                "from another rank or from the backward pass")
          : fmt::format("rank {}'s mean loss over the step was {}", dist_.rank(), localLoss);
  ++run.skippedSteps;
  if (run.skippedSteps > o.nonFiniteSkipLimit) {
    throw TrainingFailedError(fmt::format(
        "non-finite loss or gradients at {}; {}. Lower the learning rate, set a gradient "
        "clip (--clip-grad-norm), check the samples at those positions, or skip up to N such "
        "steps (--skip-nonfinite-steps N; {} allowed now)",
        where, local, o.nonFiniteSkipLimit));
  }
  run.optimizer->zero_grad();
  if (dist_.rank() == 0 || !std::isfinite(localLoss)) {
    log::warn("train", "event=skipped_nonfinite_step {} skipped={}/{} ({})", where,
              run.skippedSteps, o.nonFiniteSkipLimit, local);
  }
}

// Collective: every rank's generator state goes into rank 0's checkpoint.
void Trainer::saveCheckpoint(Run& run, bool final) {
  const int world = dist_.worldSize();
  std::vector<at::Tensor> mine{cpuRngState().to(dist_.device)};
  std::vector<std::vector<at::Tensor>> all(1);
  for (int r = 0; r < world; ++r) all[0].push_back(torch::empty_like(mine[0]));
  dist_.group->allgather(all, mine)->wait();
  if (dist_.rank() != 0) return;
  // Not the allgather above: a watchdog's exit waits for a checkpoint phase to end
  // (Note [Watchdog]), and a collective with a dead peer never does.
  const health::PhaseScope checkpointing(health::Phase::kCheckpoint);
  const TrainProgress progress{.step = run.step,
                               .epoch = run.step / run.stepsPerEpoch,
                               .samplerStart = (run.step % run.stepsPerEpoch) * run.samplesPerStep,
                               .seed = options_.seed,
                               .numSamples = run.sampler.numSamples(),
                               .worldSize = world};
  const auto payload = makeCheckpointPayload({model_.module(), *run.optimizer, options_.optimizer},
                                             progress, all[0], options_.configText);
  run.lastCheckpointAt = Clock::now();
  collectSave(run, /*wait=*/true);  // at most one in flight: its metrics first
  if (final || !options_.checkpointAsync) {
    if (const auto saved = run.checkpointer->save(run.step, payload)) recordSaved(run, *saved);
  } else {
    run.checkpointer->saveAsync(run.step, payload);
  }
}

// After the first step, when the optimizer's state exists: the snapshot buffers of
// periodic background saves are allocated while training goes on (Note [Asynchronous
// saves]).
void Trainer::reserveSnapshot(Run& run) {
  const bool periodic = options_.checkpointEvery > 0 || options_.checkpointEverySeconds > 0;
  if (dist_.rank() != 0 || !run.checkpointer || !options_.checkpointAsync || !periodic) return;
  const TrainProgress progress{.step = run.step, .worldSize = dist_.worldSize()};
  const std::vector<at::Tensor> rngStates(static_cast<std::size_t>(dist_.worldSize()),
                                          cpuRngState());
  run.checkpointer->reserveSnapshot(
      makeCheckpointPayload({model_.module(), *run.optimizer, options_.optimizer}, progress,
                            rngStates, options_.configText));
}

void Trainer::collectSave(Run& run, bool wait) {
  if (!run.checkpointer || !run.checkpointer->saving()) return;
  const auto saved = wait ? run.checkpointer->finishSave() : run.checkpointer->pollSave();
  if (saved) recordSaved(run, *saved);
}

void Trainer::recordSaved(Run& run, const CheckpointInfo& saved) {
  metrics::recordCheckpoint(saved.step, saved.total, saved.blocked,
                            static_cast<std::int64_t>(saved.bytes));
  run.checkpointStep = saved.step;
  run.lastSaved = saved;
}

constexpr std::int64_t kStragglerMinSteps = 20;  // Note [Stragglers]

// Collective (the mean loss over the ranks, the stragglers); rank 0 logs and records it.
//
// Note [Stragglers]
// ~~~~~~~~~~~~~~~~~
// At each log window every rank contributes its mean loss and its compute time per step:
// the window's wall time less its wait in collectives (a slow rank computes long and waits
// little, its peers wait for it), in one allgather where an allreduce of the loss was. A
// rank whose compute time is more than stragglerThreshold over the median in two judged
// windows in a row is named by rank 0 in the log; every rank sets its own ddprun_straggler
// gauge. Only windows of kStragglerMinSteps or more are judged, and one window is not
// enough: a few steps on a busy host (the end of a short run, ranks sharing cores) scatter
// by more than any threshold.
void Trainer::reportWindow(Run& run, double lr) {
  const int world = dist_.worldSize();
  auto& window = run.window;
  const double wall = seconds(Clock::now() - window.start);
  const double waited =
      metrics::phaseSeconds(health::phaseName(health::Phase::kCommunication)) - window.waitedBefore;
  const double computePerStep = std::max(0.0, wall - waited) / window.steps;
  std::vector<at::Tensor> mine{
      torch::tensor({window.lossSum / window.steps, computePerStep}, torch::kFloat64)
          .to(dist_.device)};
  std::vector<std::vector<at::Tensor>> all(1);
  for (int r = 0; r < world; ++r) all[0].push_back(torch::empty_like(mine[0]));
  dist_.group->allgather(all, mine)->wait();
  const auto gathered = torch::stack(all[0]).cpu();  // [world, 2]: mean loss, compute s/step
  const auto* values = gathered.data_ptr<double>();
  double lossSum = 0;
  std::vector<double> compute(world);
  for (int r = 0; r < world; ++r) {
    lossSum += values[2 * r];
    compute[r] = values[2 * r + 1];
  }
  const double loss = lossSum / world;
  auto sorted = compute;
  std::sort(sorted.begin(), sorted.end());
  const double median =
      world % 2 ? sorted[world / 2] : (sorted[world / 2 - 1] + sorted[world / 2]) / 2;
  const double limit = median * (1 + options_.stragglerThreshold);
  const bool judged = world > 1 && window.steps >= kStragglerMinSteps;
  std::vector<char> past(world, 0), named(world, 0);
  auto& before = run.pastStragglerLimit;
  if (before.size() != static_cast<std::size_t>(world)) before.assign(world, 0);
  for (int r = 0; r < world && judged; ++r) {
    past[r] = compute[r] > limit;
    named[r] = past[r] && before[r];
  }
  if (judged) before = past;
  metrics::recordCompute(compute[dist_.rank()], median, named[dist_.rank()] != 0);
  if (dist_.rank() == 0) {
    for (int r = 0; r < world; ++r) {
      if (!named[r]) continue;
      log::warn("train",
                "event=straggler rank={} compute_ms_per_step={:.2f} median_ms={:.2f} "
                "slower_by={:.0f}% steps={} (its compute, less its wait in collectives, was "
                "past --straggler-threshold {:.0f}% over the median in two windows in a row: a "
                "busy host, a slower device or a slow data source)",
                r, 1000 * compute[r], 1000 * median, 100 * (compute[r] / median - 1), window.steps,
                100 * options_.stragglerThreshold);
    }
  }
  const double samplesPerS = window.steps * run.samplesPerStep * world / wall;
  const double stepMs = 1000 * wall / window.steps;
  const std::int64_t epoch = (run.step - 1) / run.stepsPerEpoch;
  if (dist_.rank() == 0) {
    log::info("train",
              "epoch={} step={}/{} loss={:.4f} lr={:.5g} samples_per_s={:.0f} step_ms={:.2f}",
              epoch, run.step, run.totalSteps, loss, lr, samplesPerS, stepMs);
  }
  run.metrics.record({{"kind", "train"},
                      {"epoch", epoch},
                      {"step", run.step},
                      {"loss", loss},
                      {"lr", lr},
                      {"samples_per_s", samplesPerS},
                      {"step_ms", stepMs}});
  window = LossWindow{};
}

// Collective; rank 0 logs and records the evaluation as `kind` (with the run's throughput
// when given).
EvalMetrics Trainer::reportEvaluation(Run& run, Dataset& test, const char* kind,
                                      std::optional<double> samplesPerSecond) {
  const health::PhaseScope evaluating(health::Phase::kEvaluation);
  const auto m = evaluate(test);
  nlohmann::json line{{"kind", kind}, {"step", run.step}, {"test_loss", m.loss}};
  if (samplesPerSecond) line["samples_per_s"] = *samplesPerSecond;
  std::string text = fmt::format("test_loss={:.4f}", m.loss);
  for (const auto& [name, value] : m.values) {
    line["test_" + name] = value;
    text += fmt::format(" test_{}={:.4f}", name, value);
  }
  if (dist_.rank() == 0) log::info("train", "event={} step={} {}", kind, run.step, text);
  run.metrics.record(line);
  const auto accuracy = m.values.find("accuracy");
  metrics::recordEvaluation(
      m.loss, accuracy == m.values.end() ? std::nullopt : std::optional(accuracy->second));
  return m;
}

TrainResult Trainer::fit(Dataset& train, Dataset& test) {
  const auto& o = options_;
  const auto start = Clock::now();
  const int rank = dist_.rank();
  checkSameSampleShape(train, test);
  Run run(o, dist_, model_, train);
  TrainResult result;
  // Resume before wrapping: DistributedDataParallel broadcasts rank 0's weights anyway,
  // and every rank restores the same optimizer state.
  result.resumedFrom = resume(run);
  std::optional<RunJournal> journal;
  if (rank == 0 && run.checkpointer) {
    journal.emplace(o.checkpointDir, o.checkpointFileMode);
    journal->begin(result.resumedFrom);
  }
  try {
    this->train(run, test, result);
  } catch (...) {
    const auto error = asTrainingFailure(std::current_exception(), run.step + 1, o.batchSize);
    // A save still being written is finished first (Note [Asynchronous saves]): what it
    // saved counts for the journal's restart budget and is resumed from.
    try {
      collectSave(run, /*wait=*/true);
    } catch (const std::exception& e) {
      log::error("checkpoint", "event=save_failed (in the background) {}", e.what());
    }
    if (journal) recordFailure(*journal, error, run.step, run.checkpointStep, o.maxStalledRestarts);
    std::rethrow_exception(error);
  }
  if (journal) {
    journal->end(result.stoppedBySignal == 0 ? kExitOk : 128 + result.stoppedBySignal,
                 result.stoppedBySignal == 0 ? "" : strsignal(result.stoppedBySignal), run.step,
                 run.checkpointStep);
  }
  result.wallSeconds = seconds(Clock::now() - start);
  return result;
}

// Note [Injected faults]: DDPRUN_TEST_FAULT=<kind>:<rank>:<step> makes one rank misbehave
// at one step, for the fault tests (tests/faults) and nothing else:
//   desync  the rank issues one extra allreduce before the step's collectives;
//   stall   the rank stops in its forward pass for good (an endless loop in user code).
struct InjectedFault {
  std::string kind;
  int rank = -1;
  std::int64_t step = -1;

  static InjectedFault fromEnvironment() {
    InjectedFault fault;
    const char* text = std::getenv(env::var::kTestFault);
    if (text == nullptr || *text == '\0') return fault;
    const auto parts = env::splitList(text, ':');
    if (parts.size() != 3 || (parts[0] != "desync" && parts[0] != "stall")) {
      throw ConfigError(fmt::format(
          "{}='{}': expected desync:<rank>:<step> or stall:<rank>:<step> (a test-only switch). "
          "Unset it.",
          env::var::kTestFault, text));
    }
    fault.kind = parts[0];
    fault.rank = std::stoi(parts[1]);
    fault.step = std::stoll(parts[2]);
    return fault;
  }

  void maybeStrike(int rank, std::int64_t step, c10d::ProcessGroup& group) const {
    if (rank != this->rank || step != this->step) return;
    log::warn("train", "event=injected_fault kind={} step={} ({})", kind, step,
              env::var::kTestFault);
    if (kind == "desync") {
      std::vector<at::Tensor> extra{torch::zeros({7})};
      group.allreduce(extra)->wait();
    } else {
      const health::PhaseScope forwardBackward(health::Phase::kForwardBackward);
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }
};

// Note [Progress bar]: rank 0's one line at the bottom of a terminal (Note [Status line] in
// runtime/log/logging.h), at most every kRedraw: "epoch 1/2 [#####.....] step 120/938
// 12.8% | 5321 samples/s | loss 0.4123 | ETA 0:42". Drawn when stderr is a terminal, or
// when ddprun says its own is (DDPRUN_PROGRESS=1); never with DDPRUN_PROGRESS=0 or
// TrainerOptions::progressBar off (ddptrain --no-progress). In a pod nothing changes.
class ProgressBar {
 public:
  static constexpr auto kRedraw = std::chrono::milliseconds(200);

  ProgressBar(bool wanted, std::int64_t totalSteps, std::int64_t stepsPerEpoch,
              std::int64_t firstStep, std::int64_t samplesPerStep)
      : totalSteps_(totalSteps),
        stepsPerEpoch_(stepsPerEpoch),
        firstStep_(firstStep),
        samplesPerStep_(samplesPerStep) {
    const char* setting = std::getenv(env::var::kProgress);
    const std::string_view value = setting ? setting : "";
    enabled_ = wanted && value != "0" && (value == "1" || log::stderrIsTerminal());
  }
  ~ProgressBar() {
    if (enabled_) log::showStatusLine("");
  }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(std::int64_t step, double loss) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (step < totalSteps_ && now - drawn_ < kRedraw) return;
    drawn_ = now;
    const double elapsed = seconds(now - start_);
    const double stepsPerSecond = elapsed > 0 ? (step - firstStep_) / elapsed : 0;
    const double fraction = static_cast<double>(step) / static_cast<double>(totalSteps_);
    constexpr int kWidth = 20;
    const int filled = static_cast<int>(fraction * kWidth);
    std::string eta = "--:--";
    if (stepsPerSecond > 0) {
      const auto left = static_cast<std::int64_t>((totalSteps_ - step) / stepsPerSecond);
      eta = left >= 3600 ? fmt::format("{}:{:02d}:{:02d}", left / 3600, left / 60 % 60, left % 60)
                         : fmt::format("{}:{:02d}", left / 60, left % 60);
    }
    const std::int64_t epochs = (totalSteps_ + stepsPerEpoch_ - 1) / stepsPerEpoch_;
    log::showStatusLine(fmt::format(
        "epoch {}/{} [{}{}] step {}/{} {:.1f}% | {:.0f} samples/s | loss {:.4f} | ETA {}",
        std::min((step - 1) / stepsPerEpoch_ + 1, epochs), epochs, std::string(filled, '#'),
        std::string(kWidth - filled, '.'), step, totalSteps_, 100 * fraction,
        stepsPerSecond * samplesPerStep_, loss, eta));
  }

 private:
  bool enabled_ = false;
  std::int64_t totalSteps_, stepsPerEpoch_, firstStep_, samplesPerStep_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point drawn_{};
};

// The loop of fit(), from the resumed step to the end or a stop.
void Trainer::train(Run& run, Dataset& test, TrainResult& result) {
  const auto& o = options_;
  const int rank = dist_.rank(), world = dist_.worldSize();
  run.ddp = std::make_unique<DistributedDataParallel<std::shared_ptr<ForwardingModule>>>(
      run.forwarding, dist_.group, o.ddp);
  StopVote stopVote(*dist_.group, dist_.device);
  if (rank == 0) {
    log::info("train",
              "event=start steps={} steps_per_epoch={} batch_per_rank={} "
              "grad_accumulation={} global_batch={} optimizer={} lr={} schedule={} from_step={}",
              run.totalSteps, run.stepsPerEpoch, o.batchSize, o.gradAccumulation,
              run.samplesPerStep * world, o.optimizer.name, o.optimizer.lr, o.schedule.name,
              run.step);
  }

  run.metrics.start(world, o.configText, run.step);
  metrics::setRunShape({.totalSteps = run.totalSteps,
                        .stepsPerEpoch = run.stepsPerEpoch,
                        .epochs = (run.totalSteps + run.stepsPerEpoch - 1) / run.stepsPerEpoch,
                        .samplesPerStep = run.samplesPerStep * world,
                        .firstStep = run.step});
  ProgressBar bar(rank == 0 && o.progressBar, run.totalSteps, run.stepsPerEpoch, run.step,
                  run.samplesPerStep * world);
  const auto fault = InjectedFault::fromEnvironment();
  std::int64_t runSteps = 0;
  const auto loopStart = Clock::now();
  const GracefulStop graceful;  // until the final checkpoint and evaluation are done
  const health::PhaseScope training(health::Phase::kTraining);
  while (run.step < run.totalSteps) {
    const double lr = learningRate(o.schedule, o.optimizer.lr, run.step, run.totalSteps);
    setLearningRate(*run.optimizer, lr);
    fault.maybeStrike(rank, run.step + 1, *dist_.group);
    const double stepLoss = trainStep(run);
    run.window.lossSum += stepLoss;
    ++run.window.steps;
    ++run.step;
    ++runSteps;
    health::stepDone(run.step);
    if (runSteps == 1) reserveSnapshot(run);
    metrics::recordTraining((run.step - 1) / run.stepsPerEpoch, stepLoss, lr, run.samplesPerStep);
    bar.update(run.step, stepLoss);
    collectSave(run, /*wait=*/false);
    // Rank 0's clock alone says when a timed checkpoint is due; restarting the timer at
    // the vote keeps the next step's vote from asking again.
    bool timedCheckpointDue = false;
    if (rank == 0 && run.checkpointer && o.checkpointEverySeconds > 0 &&
        seconds(Clock::now() - run.lastCheckpointAt) >= o.checkpointEverySeconds) {
      timedCheckpointDue = true;
      run.lastCheckpointAt = Clock::now();
    }
    const auto vote = stopVote.exchange({stopSignalReceived(), timedCheckpointDue});
    const int stopSignal = vote.signal;
    const bool lastStep = run.step == run.totalSteps;

    if (run.step % o.logEvery == 0 || lastStep) reportWindow(run, lr);
    if (o.evalEvery > 0 && run.step % o.evalEvery == 0 && !lastStep) {
      reportEvaluation(run, test, "eval");
    }
    if (stopSignal != 0) {
      result.stoppedBySignal = stopSignal;
      if (rank == 0) {
        log::warn("train", "event=stopping signal={} step={} (checkpointing, then exiting)",
                  strsignal(stopSignal), run.step);
      }
      break;
    }
    const bool everyN = o.checkpointEvery > 0 && run.step % o.checkpointEvery == 0;
    if (run.checkpointer && (everyN || vote.checkpointDue) && !lastStep) {
      saveCheckpoint(run, /*final=*/false);
    }
  }
  stopVote.finish();
  const double trainSeconds = seconds(Clock::now() - loopStart);
  if (run.checkpointer) saveCheckpoint(run, /*final=*/true);

  result.steps = run.step;
  result.samplesPerSecond =
      trainSeconds > 0 ? runSteps * run.samplesPerStep * world / trainSeconds : 0;
  if (result.stoppedBySignal == 0) {
    result.test = reportEvaluation(run, test, "final", result.samplesPerSecond);
    if (run.lastSaved) run.checkpointer->markComplete(*run.lastSaved, o.configText);
  }
}

}  // namespace ddp::train
