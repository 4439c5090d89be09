// Which samples each rank reads, epoch by epoch: PyTorch's DistributedSampler, index for
// index (same permutation from seed + epoch, same padding, same striding), plus a resume
// point inside an epoch.
//
// Note [Sampler shards]
// - Epoch e: a permutation of [0, datasetSize) from a generator seeded with seed + e
//   (identity when shuffle is off), shared by every rank.
// - Equal shards: with dropLast the tail that does not divide by the world size is
//   dropped; otherwise the permutation is padded by repeating its head. Every rank then
//   gets numSamples() indices, so every rank runs the same number of steps.
// - Rank r takes positions r, r + W, r + 2W, ... of the (padded) permutation: shards are
//   disjoint and together cover the data set (up to the padding or the dropped tail).
// - Resume: setStart(offset) skips the first `offset` indices of this rank's shard, so
//   a run restored mid-epoch reads exactly what the interrupted run would have read.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "runtime/error.h"

namespace ddp::train {

struct SamplerOptions {
  bool shuffle = true;
  // true: drop the tail that does not divide evenly; false: pad with repeated indices.
  bool dropLast = false;
  std::uint64_t seed = 0;
};

class DistributedSampler {
 public:
  // Throws ConfigError for an empty data set, a world size < 1 or a rank
  // outside [0, worldSize), or dropLast with fewer samples than ranks.
  DistributedSampler(std::int64_t datasetSize, int worldSize, int rank,
                     SamplerOptions options = {});

  // Selects the epoch's permutation and rewinds to its start.
  void setEpoch(std::int64_t epoch);
  // Skips the first `offset` indices of this rank's shard in the current epoch.
  void setStart(std::int64_t offset);

  // This rank's indices for the current epoch from the start point: int64 [n].
  at::Tensor indices() const;

  std::int64_t epoch() const { return epoch_; }
  std::int64_t start() const { return start_; }
  // Indices per rank per epoch (equal on every rank), and over all ranks.
  std::int64_t numSamples() const { return numSamples_; }
  std::int64_t totalSize() const { return numSamples_ * worldSize_; }

 private:
  std::int64_t datasetSize_;
  int worldSize_;
  int rank_;
  SamplerOptions options_;
  std::int64_t numSamples_;
  std::int64_t epoch_ = 0;
  std::int64_t start_ = 0;
};

}  // namespace ddp::train
