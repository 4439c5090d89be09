// ddp::train::Trainer: the data-parallel training loop for the user's own model, loss and
// data, across the ranks of a ddp::Distributed. ddptrain is one user of it; so is
// examples/custom_loop.
//
// Note [One step]
//   indices of this step's micro-batches <- DistributedSampler (epoch, position), read
//                                           ahead by a BatchPrefetcher (prefetcher.h)
//   lr <- schedule(step)                                  (optimizer.h)
//   for each of gradAccumulation micro-batches:           all but the last under noSync
//     loss = objective.loss(ddp.forward(x), y) / gradAccumulation;  loss.backward()
//   clip the global gradient norm; optimizer.step(); ++step
//   stop request? (signals, agreed on by all ranks)  log / evaluate / checkpoint
// The position in the data is a function of the step (stepsPerEpoch steps per epoch,
// the incomplete tail of an epoch is skipped), so a run resumed from a checkpoint reads
// the same samples, in the same order, as the run that wrote it (Note [Checkpoint
// contents] in train_state.h).
//
// Note [Non-finite steps]
// A micro-batch whose loss is NaN or infinite backpropagates NaN (the loss is replaced
// by NaN, on the device, without a sync), so the reduced gradients of every rank hold a
// non-finite value whichever rank saw it; every rank checks the reduced gradients' norm
// and so decides the same without another collective. Such a step either stops the run
// (TrainingFailedError, exit 3, naming the step and the samples' place in the sampler),
// or, while fewer than nonFiniteSkipLimit steps were skipped, is skipped: no optimizer
// step, the batch is consumed.
//
// Note [Stopping on a signal]
// Inside the training loop (a GracefulStop in scope: Trainer::fit holds one) SIGTERM/SIGINT
// set a flag. Every step, each rank contributes its flag to an allreduce(MAX) that is
// waited for one step later (it overlaps that step's compute); all ranks so stop after the
// same step, checkpoint, and report the signal. Outside it (the rendezvous, the group's
// setup, restoring a checkpoint) nobody would read the flag until a timeout, minutes away,
// and there is nothing to save: the process ends at once with 128 + signal (143, 130).
// A second signal inside the loop changes nothing: under mpirun a Ctrl-C reaches the ranks
// both from the terminal and from mpirun (ddprun kills its workers on a second Ctrl-C).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <functional>
#include <map>
#include <memory>
#include <type_traits>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "runtime/ddp/distributed_data_parallel.h"
#include "runtime/distributed.h"
#include "runtime/train/dataset.h"
#include "runtime/train/objective.h"
#include "runtime/train/optimizer.h"

namespace ddp::train {

struct CheckpointInfo;  // checkpointer.h

// The training itself cannot go on (exit kExitTrainingFailed): a non-finite loss or
// gradient, out of memory. A restart would fail the same way at the same step.
class TrainingFailedError : public PermanentError {
 public:
  explicit TrainingFailedError(const std::string& what)
      : PermanentError(what, kExitTrainingFailed) {}
};

struct TrainerOptions {
  int epochs = 2;
  std::int64_t maxSteps = 0;    // > 0: stop after this many steps instead
  std::int64_t batchSize = 64;  // samples per rank per micro-batch
  int gradAccumulation = 1;     // micro-batches per optimizer step
  OptimizerOptions optimizer;
  ScheduleOptions schedule;
  double clipGradNorm = 0.0;   // > 0: clip the global L2 norm of the gradients
  std::int64_t evalEvery = 0;  // > 0: also evaluate every N steps
  std::int64_t evalBatchSize = 1000;
  std::int64_t logEvery = 100;
  std::string metricsFile;  // rank 0 appends one JSON object per line; "" = none
  std::uint64_t seed = 42;
  bool shuffle = true;
  bool dropLast = false;             // sampler: drop the tail instead of padding
  std::string checkpointDir;         // "" = no checkpoints
  std::int64_t checkpointEvery = 0;  // > 0: every N steps (and always at the end)
  // > 0: also when this many seconds passed since the last checkpoint (rank 0's clock; all
  // ranks save one step after it says so).
  double checkpointEverySeconds = 0;
  // Note [Asynchronous saves] (checkpointer.h): periodic checkpoints are written in the
  // background; false: training waits for every write. The final one is always waited for.
  bool checkpointAsync = true;
  int keepCheckpoints = 3;
  unsigned checkpointFileMode = 0640;  // checkpoints, manifests, journal, completion marker
  std::string resume = "auto";         // auto | none | a checkpoint path
  // Note [Restart budget] (run_journal.h): with a checkpointDir, this many retryable
  // failures in a row without a new checkpoint make the next one permanent (0: never).
  int maxStalledRestarts = 3;
  std::int64_t nonFiniteSkipLimit = 0;  // Note [Non-finite steps]: 0 stops at the first
  std::size_t prefetchBatches = 2;      // micro-batches read ahead (0: read in the loop)
  // Note [Stragglers] (trainer.cpp): a rank whose compute time per step is more than this
  // fraction over the median (two log windows in a row) is named in the log and in
  // ddprun_straggler.
  double stragglerThreshold = 0.3;
  bool progressBar = true;  // Note [Progress bar]: rank 0's, at a terminal only
  DdpOptions ddp;
  std::string configText;  // the resolved configuration, stored in checkpoints
};

struct EvalMetrics {
  double loss = 0;                       // mean loss per target
  std::map<std::string, double> values;  // each Objective metric, per target

  // values.at(name), or an error naming the metrics there are.
  double value(const std::string& name) const;
};

// Any module whose forward takes a tensor and returns one, behind one type: a ModuleHolder
// (torch::nn::Sequential, a TORCH_MODULE type) or a std::shared_ptr to a Module subclass.
class TrainableModel {
 public:
  template <typename ModuleHolder>
  TrainableModel(ModuleHolder model)  // NOLINT: implicit, so a model passes as it is
      : module_(asModulePtr(model)),
        forward_([model](const at::Tensor& input) mutable -> at::Tensor {
          return model->forward(input);
        }) {}

  torch::nn::Module& module() const { return *module_; }
  const std::shared_ptr<torch::nn::Module>& modulePtr() const { return module_; }
  at::Tensor forward(const at::Tensor& input) const { return forward_(input); }

 private:
  template <typename ModuleHolder>
  static std::shared_ptr<torch::nn::Module> asModulePtr(const ModuleHolder& model) {
    if constexpr (requires { model.ptr(); }) {
      return model.ptr();
    } else {
      return model;
    }
  }

  std::shared_ptr<torch::nn::Module> module_;
  std::function<at::Tensor(const at::Tensor&)> forward_;
};

struct TrainResult {
  std::int64_t steps = 0;         // optimizer steps done, in total (including resumed ones)
  std::int64_t resumedFrom = -1;  // the checkpoint's step, -1 when started fresh
  EvalMetrics test;
  double samplesPerSecond = 0;  // this run's training throughput, all ranks together
  double wallSeconds = 0;
  int stoppedBySignal = 0;  // SIGTERM/SIGINT that stopped the run, 0 if it finished
};

class Trainer {
 public:
  // Throws ConfigError for options that cannot work. The objective defaults to
  // classification() (cross entropy, accuracy).
  Trainer(Distributed& dist, TrainableModel model, TrainerOptions options,
          Objective objective = classification());

  // Trains on `train`; evaluates on `test` every evalEvery steps and at the end. Resumes
  // from options.resume and checkpoints to options.checkpointDir, where rank 0 also keeps
  // the run journal (Note [Restart budget]) and, once the last step is saved, the
  // completion marker (Note [Completion marker] in checkpointer.h). Collective.
  // Throws ConfigError when the test samples are shaped unlike the training ones,
  // TrainingFailedError for a non-finite step or out of memory, RestartsExhaustedError
  // (rank 0) when the restart budget is spent.
  TrainResult fit(Dataset& train, Dataset& test);

  // Collective: the objective's loss and metrics over all of `data`, every rank scoring
  // its share.
  EvalMetrics evaluate(Dataset& data);

  torch::nn::Module& model() { return model_.module(); }

 private:
  struct Run;  // one fit(): the sampler, the step counts, the optimizer (trainer.cpp)

  Distributed& dist_;
  TrainableModel model_;
  TrainerOptions options_;
  Objective objective_;

  std::int64_t resume(Run& run);
  void train(Run& run, Dataset& test, TrainResult& result);
  double trainStep(Run& run);
  void skipOrStop(Run& run, double localLoss);
  // `final`: written synchronously (the run ends with it); else as checkpointAsync says.
  void saveCheckpoint(Run& run, bool final);
  // Rank 0: takes in what a background save finished (its step, metrics); `wait`: waits
  // for the one in flight.
  void collectSave(Run& run, bool wait);
  void recordSaved(Run& run, const CheckpointInfo& saved);
  void reserveSnapshot(Run& run);
  void reportWindow(Run& run, double lr);
  EvalMetrics reportEvaluation(Run& run, Dataset& test, const char* kind,
                               std::optional<double> samplesPerSecond = std::nullopt);
};

// Installs the SIGTERM/SIGINT handlers that request a stop (Note [Stopping on a signal]);
// returns the signal received so far, 0 if none.
void installStopSignalHandlers();
int stopSignalReceived();

// While one exists, a stop signal is only recorded for stopSignalReceived(): a loop of the
// user's own that polls it holds one (Note [Stopping on a signal]). Not nested.
class GracefulStop {
 public:
  GracefulStop();
  ~GracefulStop();
  GracefulStop(const GracefulStop&) = delete;
  GracefulStop& operator=(const GracefulStop&) = delete;
};

}  // namespace ddp::train
