// The data a Trainer reads: any data set that can hand over the samples at given indices.
// The DistributedSampler decides which indices each rank reads; a BatchPrefetcher
// (prefetcher.h) reads the coming batches on a background thread while the current one
// trains. An in-memory data set implements it with one index_select; a file-backed one
// reads only the records it is asked for (examples/custom_loop has one).
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace ddp::train {

struct Batch {
  at::Tensor inputs;   // [B, ...]
  at::Tensor targets;  // [B, ...]
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  // Samples in the data set; indices run from 0 to size() - 1.
  virtual std::int64_t size() const = 0;
  // The samples at `indices` (int64 [B], on the CPU), stacked in that order. Called from
  // the prefetch thread, one call at a time, up to an epoch ahead of training: it must not
  // depend on state that the training thread changes, and it must be a function of the
  // indices alone (no draws from torch's global generator: a random augmentation seeds its
  // own generator from the indices), or a resumed run reads other data than the run it
  // resumes. Throw a PermanentError (e.g. data::DataError) for input that cannot be used,
  // a TransientError for I/O that may recover.
  virtual Batch read(const at::Tensor& indices) = 0;
};

// Sample i is (inputs[i], targets[i]), all in memory.
class InMemoryDataset : public Dataset {
 public:
  InMemoryDataset(at::Tensor inputs, at::Tensor targets);
  std::int64_t size() const override;
  Batch read(const at::Tensor& indices) override;

 private:
  at::Tensor inputs_;
  at::Tensor targets_;
};

}  // namespace ddp::train
