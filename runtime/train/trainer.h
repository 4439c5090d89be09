// ddp::train::Trainer: the training loop of ddptrain, for any torch::nn::Sequential and
// an in-memory data set, across the ranks of a ddp::Distributed.
//
// Note [One step]
//   indices of this step's micro-batches <- DistributedSampler (epoch, position)
//   lr <- schedule(step)                                  (learningRate below)
//   for each of gradAccumulation micro-batches:           all but the last under noSync
//     loss = cross_entropy(ddp.forward(x), y) / gradAccumulation;  loss.backward()
//   clip the global gradient norm; optimizer.step(); ++step
//   stop request? (signals, agreed on by all ranks)  log / evaluate / checkpoint
// The position in the data is a function of the step (stepsPerEpoch steps per epoch,
// the incomplete tail of an epoch is skipped), so a run resumed from a checkpoint reads
// the same samples, in the same order, as the run that wrote it.
//
// Note [Stopping on a signal]
// SIGTERM/SIGINT set a flag. Every step, each rank contributes its flag to an
// allreduce(MAX) that is waited for one step later (it overlaps that step's compute);
// all ranks so stop after the same step, checkpoint, and report the signal.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/sequential.h>

#include "runtime/ddp/distributed_data_parallel.h"
#include "runtime/distributed.h"

namespace ddp::train {

struct OptimizerOptions {
  std::string name = "sgd";  // sgd | adam | adamw
  double lr = 0.05;
  double momentum = 0.9;     // sgd
  double weightDecay = 0.0;
  double beta1 = 0.9;        // adam, adamw
  double beta2 = 0.999;
  double eps = 1e-8;
};

struct ScheduleOptions {
  std::string name = "constant";  // constant | cosine | step
  std::int64_t warmupSteps = 0;   // linear warm-up from lr/warmupSteps to lr
  double minLrRatio = 0.0;        // cosine: the floor, as a fraction of lr
  std::int64_t stepSize = 1000;   // step: decay every stepSize steps after warm-up
  double gamma = 0.1;             // step: the factor per decay
};

// The learning rate for optimizer step `step` (0-based) of `totalSteps`.
double learningRate(const ScheduleOptions& schedule, double baseLr, std::int64_t step,
                    std::int64_t totalSteps);

struct TrainerOptions {
  int epochs = 2;
  std::int64_t maxSteps = 0;        // > 0: stop after this many steps instead
  std::int64_t batchSize = 64;      // samples per rank per micro-batch
  int gradAccumulation = 1;         // micro-batches per optimizer step
  OptimizerOptions optimizer;
  ScheduleOptions schedule;
  double clipGradNorm = 0.0;        // > 0: clip the global L2 norm of the gradients
  std::int64_t evalEvery = 0;       // > 0: also evaluate every N steps
  std::int64_t evalBatchSize = 1000;
  std::int64_t logEvery = 100;
  std::string metricsFile;          // rank 0 appends one JSON object per line; "" = none
  std::uint64_t seed = 42;
  bool shuffle = true;
  bool dropLast = false;            // sampler: drop the tail instead of padding
  std::string checkpointDir;        // "" = no checkpoints
  std::int64_t checkpointEvery = 0; // > 0: every N steps (and always at the end)
  int keepCheckpoints = 3;
  std::string resume = "auto";      // auto | none | a checkpoint path
  DdpOptions ddp;
  std::string configText;           // the resolved configuration, stored in checkpoints
};

// An in-memory split: sample i is (inputs[i], targets[i]). targets int64 [N] (classes)
// or [N, T] (one class per position, e.g. next characters).
struct Examples {
  at::Tensor inputs;
  at::Tensor targets;
};

struct EvalMetrics {
  double loss = 0;      // mean cross entropy per target
  double accuracy = 0;  // share of targets predicted right
};

struct TrainResult {
  std::int64_t steps = 0;       // optimizer steps done, in total (including resumed ones)
  std::int64_t resumedFrom = -1;// the checkpoint's step, -1 when started fresh
  EvalMetrics test;
  double samplesPerSecond = 0;  // this run's training throughput, all ranks together
  double wallSeconds = 0;
  int stoppedBySignal = 0;      // SIGTERM/SIGINT that stopped the run, 0 if it finished
};

class Trainer {
 public:
  // Throws ConfigError for options that cannot work (e.g. a batch larger than a shard).
  Trainer(Distributed& dist, torch::nn::Sequential model, TrainerOptions options);

  TrainResult fit(const Examples& train, const Examples& test);

  // Collective: loss and accuracy over all of `data`, every rank scoring its share.
  EvalMetrics evaluate(const Examples& data);

  torch::nn::Sequential& model() { return model_; }

 private:
  Distributed& dist_;
  torch::nn::Sequential model_;
  TrainerOptions options_;
};

// Installs the SIGTERM/SIGINT handlers that request a stop (Note [Stopping on a signal]);
// returns the signal received so far, 0 if none.
void installStopSignalHandlers();
int stopSignalReceived();

}  // namespace ddp::train
