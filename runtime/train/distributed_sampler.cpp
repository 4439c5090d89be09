#include "runtime/train/distributed_sampler.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "runtime/error.h"

namespace ddp::train {

DistributedSampler::DistributedSampler(std::int64_t datasetSize, int worldSize, int rank,
                                       SamplerOptions options)
    : datasetSize_(datasetSize), worldSize_(worldSize), rank_(rank), options_(options) {
  if (datasetSize < 1) {
    throw ConfigError(
        fmt::format("DistributedSampler: the data set is empty (size {})", datasetSize));
  }
  if (worldSize < 1 || rank < 0 || rank >= worldSize) {
    throw ConfigError(
        fmt::format("DistributedSampler: rank {} of world size {}: expected 0 <= rank < world size",
                    rank, worldSize));
  }
  if (options.dropLast && datasetSize < worldSize) {
    throw ConfigError(
        fmt::format("DistributedSampler: {} samples cannot be split over {} ranks with drop-last "
                    "(every rank would get none); use padding or fewer ranks",
                    datasetSize, worldSize));
  }
  // As torch.utils.data.DistributedSampler computes num_samples.
  numSamples_ =
      options.dropLast ? datasetSize / worldSize : (datasetSize + worldSize - 1) / worldSize;
}

void DistributedSampler::setEpoch(std::int64_t epoch) {
  epoch_ = epoch;
  start_ = 0;
}

void DistributedSampler::setStart(std::int64_t offset) {
  if (offset < 0 || offset > numSamples_) {
    throw ConfigError(fmt::format(
        "DistributedSampler: start {} is outside this rank's shard of {} samples (epoch {})",
        offset, numSamples_, epoch_));
  }
  start_ = offset;
}

at::Tensor DistributedSampler::indices() const {
  at::Tensor order;
  if (options_.shuffle) {
    // torch.Generator().manual_seed(seed + epoch); torch.randperm(n, generator=g)
    auto generator = at::make_generator<at::CPUGeneratorImpl>(options_.seed + epoch_);
    order = torch::randperm(datasetSize_, generator, torch::kInt64);
  } else {
    order = torch::arange(datasetSize_, torch::kInt64);
  }
  const std::int64_t total = totalSize();
  if (total > datasetSize_) {
    // Pad by repeating the permutation's head (as many times as needed).
    const std::int64_t repeats = (total + datasetSize_ - 1) / datasetSize_;
    order = order.repeat({repeats}).slice(0, 0, total);
  } else {
    order = order.slice(0, 0, total);
  }
  return order.slice(0, rank_, total, worldSize_).slice(0, start_).contiguous();
}

}  // namespace ddp::train
