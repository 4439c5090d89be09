// Reading ahead: the batches of the coming steps are read on a background thread while
// the current step computes, so a data set that reads from disk costs the step nothing
// once the reads are faster than the compute.
//
// Note [Reading ahead]
// The trainer knows the whole order of an epoch in advance (the sampler's permutation), so
// it schedules every remaining batch of the epoch at once; the thread reads them in that
// order and keeps at most `depth` finished batches waiting (memory stays bounded). A new
// schedule() drops whatever was read for the old one. An exception thrown by the data set
// reaches the training thread at the next(), unchanged, so its family decides the exit code.
// depth 0 reads in the calling thread (no thread at all).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/train/dataset.h"

namespace ddp::train {

class BatchPrefetcher {
 public:
  BatchPrefetcher(Dataset& dataset, std::size_t depth);
  ~BatchPrefetcher();  // stops the thread; batches not taken are dropped
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  // The batches to read next, in order: each an int64 index tensor for Dataset::read().
  void schedule(std::vector<at::Tensor> batches);
  // The next scheduled batch; blocks until it is read. Rethrows the data set's exception.
  Batch next();

 private:
  void run();

  Dataset& dataset_;
  const std::size_t depth_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<at::Tensor> pending_;  // scheduled, not read yet
  std::deque<Batch> ready_;         // read, not taken yet
  std::exception_ptr error_;
  std::size_t generation_ = 0;  // bumped by schedule(): a read in flight is then stale
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace ddp::train
