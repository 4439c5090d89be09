// What a checkpoint holds, in one place: the payload rank 0 writes and every rank restores
// from. The Checkpointer (checkpointer.h) moves the bytes; this file decides what they mean.
//
// Note [Checkpoint contents]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~
// One dict, as torch.load in Python sees it (strings, ints, tensors, dicts and generic
// lists only, so that weights_only loading accepts it):
//   format      "ddprun-checkpoint-v1"
//   model       {name: tensor}  parameters and buffers as Module::named_parameters() /
//               named_buffers() list them (the same names as PyTorch's state_dict())
//   optimizer   {"name", "state": {index: {...}}, "param_groups": [{...}]} in the shape
//               of PyTorch's Optimizer.state_dict(), indices in parameter order
//   step        optimizer steps done
//   epoch       the epoch of `step`
//   sampler     {"epoch", "start" (position in this epoch's shard), "seed", "num_samples"}
//   rng         {"cpu": [one CPU generator state per rank]}
//   world_size  ranks of the run that wrote it
//   config      the resolved configuration (ddptrain: its YAML), "" if none
// A run resumed with the same world size restores every rank's generator, so it reads the
// same samples in the same order and ends with the same weights as an uninterrupted one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "runtime/error.h"
#include "runtime/train/checkpointer.h"
#include "runtime/train/optimizer.h"

namespace ddp::train {

inline constexpr const char* kCheckpointFormat = "ddprun-checkpoint-v1";

// Where a run is, besides its tensors.
struct TrainProgress {
  std::int64_t step = 0;
  std::int64_t epoch = 0;
  std::int64_t samplerStart = 0;  // the position in this epoch's shard of each rank
  std::uint64_t seed = 0;
  std::int64_t numSamples = 0;  // samples in each rank's shard
  std::int64_t worldSize = 1;
};

// The live objects a checkpoint is taken from and restored into.
struct TrainObjects {
  torch::nn::Module& model;
  torch::optim::Optimizer& optimizer;
  const OptimizerOptions& optimizerOptions;
};

// Rank 0: the payload of Note [Checkpoint contents]. `rngStates`: every rank's CPU
// generator state, in rank order. The model's and optimizer's tensors are the live ones,
// detached, on their device: Checkpointer::save and saveAsync copy what they must
// (Note [Asynchronous saves]), so the payload is taken only to be saved at once.
c10::IValue makeCheckpointPayload(const TrainObjects& objects, const TrainProgress& progress,
                                  const std::vector<at::Tensor>& rngStates,
                                  const std::string& configText);

// Every rank: restores model tensors, optimizer state (onto `device`) and, when the world
// size is the one that wrote it, this rank's generator. Returns the saved progress.
// Throws CheckpointMismatchError when the payload does not fit: another format, another
// model (names, count or shapes of tensors), another optimizer. `path` names it in errors.
TrainProgress restoreCheckpoint(const c10::IValue& payload, const std::string& path,
                                const TrainObjects& objects, int rank, int worldSize,
                                const c10::Device& device);

// The default CPU generator's state, and setting it (the `rng` entry).
at::Tensor cpuRngState();
void setCpuRngState(const at::Tensor& state);

}  // namespace ddp::train
