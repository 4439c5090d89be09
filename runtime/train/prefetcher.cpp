#include "runtime/train/prefetcher.h"

#include <stdexcept>

#include <torch/torch.h>

namespace ddp::train {

BatchPrefetcher::BatchPrefetcher(Dataset& dataset, std::size_t depth)
    : dataset_(dataset), depth_(depth) {
  if (depth_ > 0) thread_ = std::thread([this] { run(); });
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void BatchPrefetcher::schedule(std::vector<at::Tensor> batches) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.assign(std::make_move_iterator(batches.begin()),
                    std::make_move_iterator(batches.end()));
    ready_.clear();
    error_ = nullptr;
    ++generation_;
  }
  changed_.notify_all();
}

Batch BatchPrefetcher::next() {
  if (depth_ == 0) {
    if (pending_.empty()) throw std::logic_error("BatchPrefetcher::next(): nothing scheduled");
    auto indices = std::move(pending_.front());
    pending_.pop_front();
    return dataset_.read(indices);
  }
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return !ready_.empty() || error_ || pending_.empty(); });
  if (!ready_.empty()) {
    Batch batch = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    changed_.notify_all();  // room for one more
    return batch;
  }
  if (error_) std::rethrow_exception(error_);
  throw std::logic_error("BatchPrefetcher::next(): nothing scheduled");
}

void BatchPrefetcher::run() {
  // Reads are not part of any autograd graph.
  torch::NoGradGuard noGrad;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] {
      return stopping_ || (!pending_.empty() && ready_.size() < depth_ && !error_);
    });
    if (stopping_) return;
    auto indices = pending_.front();
    const auto generation = generation_;
    lock.unlock();
    Batch batch;
    std::exception_ptr error;
    try {
      batch = dataset_.read(indices);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (generation != generation_) continue;  // rescheduled meanwhile: drop it
    pending_.pop_front();
    if (error) {
      error_ = error;
    } else {
      ready_.push_back(std::move(batch));
    }
    changed_.notify_all();
  }
}

}  // namespace ddp::train
