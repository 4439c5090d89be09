// BatchPrefetcher (Note [Reading ahead]): the scheduled batches come back in order and
// equal to direct reads, reads happen on its thread and at most `depth` ahead, a new
// schedule drops the old one, and a data set's error reaches next() with its type.
#include "runtime/train/prefetcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include <torch/torch.h>

#include "data/data_error.h"

namespace ddp::train {
namespace {

// Sample i is (i, 10 i); remembers which threads read and how many reads there were;
// throws DataError when asked for sample `failAt`.
class CountingDataset : public Dataset {
 public:
  explicit CountingDataset(std::int64_t size, std::int64_t failAt = -1)
      : size_(size), failAt_(failAt) {}
  std::int64_t size() const override { return size_; }
  Batch read(const at::Tensor& indices) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      threads_.insert(std::this_thread::get_id());
    }
    ++reads_;
    if (failAt_ >= 0 && (indices == failAt_).any().item<bool>()) {
      throw data::DataError("record " + std::to_string(failAt_) + " is corrupt");
    }
    const auto values = indices.to(torch::kFloat32);
    return {values, values * 10};
  }
  int reads() const { return reads_.load(); }
  std::set<std::thread::id> threads() {
    std::lock_guard<std::mutex> lock(mutex_);
    return threads_;
  }

 private:
  std::int64_t size_;
  std::int64_t failAt_;
  std::atomic<int> reads_{0};
  std::mutex mutex_;
  std::set<std::thread::id> threads_;
};

std::vector<at::Tensor> batchesOf(std::initializer_list<std::vector<std::int64_t>> lists) {
  std::vector<at::Tensor> batches;
  for (const auto& list : lists) batches.push_back(torch::tensor(list, torch::kLong));
  return batches;
}

TEST(BatchPrefetcherTest, ReturnsScheduledBatchesInOrderFromItsThread) {
  for (std::size_t depth : {0u, 1u, 3u}) {
    CountingDataset dataset(100);
    BatchPrefetcher prefetcher(dataset, depth);
    prefetcher.schedule(batchesOf({{5, 1}, {7}, {2, 3, 4}}));
    for (const auto& expected : batchesOf({{5, 1}, {7}, {2, 3, 4}})) {
      const auto batch = prefetcher.next();
      EXPECT_TRUE(batch.inputs.equal(expected.to(torch::kFloat32))) << "depth " << depth;
      EXPECT_TRUE(batch.targets.equal(expected.to(torch::kFloat32) * 10)) << "depth " << depth;
    }
    const bool onCaller = dataset.threads() == std::set{std::this_thread::get_id()};
    EXPECT_EQ(onCaller, depth == 0) << "depth " << depth;
  }
}

TEST(BatchPrefetcherTest, ReadsAtMostDepthAhead) {
  CountingDataset dataset(100);
  BatchPrefetcher prefetcher(dataset, 2);
  std::vector<at::Tensor> batches;
  for (std::int64_t i = 0; i < 10; ++i) batches.push_back(torch::tensor({i}, torch::kLong));
  prefetcher.schedule(batches);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (dataset.reads() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(dataset.reads(), 2) << "read ahead without a next()";
  prefetcher.next();
  while (dataset.reads() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(dataset.reads(), 3) << "one taken, one more read";
}

TEST(BatchPrefetcherTest, ANewScheduleReplacesTheOld) {
  CountingDataset dataset(100);
  BatchPrefetcher prefetcher(dataset, 2);
  prefetcher.schedule(batchesOf({{1}, {2}, {3}}));
  EXPECT_EQ(prefetcher.next().inputs.item<float>(), 1.0f);
  prefetcher.schedule(batchesOf({{40}, {41}}));
  EXPECT_EQ(prefetcher.next().inputs.item<float>(), 40.0f);
  EXPECT_EQ(prefetcher.next().inputs.item<float>(), 41.0f);
  EXPECT_THROW(prefetcher.next(), std::logic_error) << "nothing left";
}

TEST(BatchPrefetcherTest, TheDataSetsErrorReachesNextWithItsType) {
  for (std::size_t depth : {0u, 2u}) {
    CountingDataset dataset(100, /*failAt=*/7);
    BatchPrefetcher prefetcher(dataset, depth);
    prefetcher.schedule(batchesOf({{1}, {2}, {7}, {8}}));
    EXPECT_EQ(prefetcher.next().inputs.item<float>(), 1.0f);
    EXPECT_EQ(prefetcher.next().inputs.item<float>(), 2.0f);
    try {
      prefetcher.next();
      ADD_FAILURE() << "expected the DataError, depth " << depth;
    } catch (const data::DataError& e) {
      EXPECT_STREQ(e.what(), "record 7 is corrupt");
      EXPECT_EQ(exitCodeFor(e), kExitUsage);
    }
  }
}

TEST(InMemoryDatasetTest, ReadsTheRowsAtTheIndices) {
  InMemoryDataset dataset(torch::arange(12, torch::kFloat32).reshape({6, 2}),
                          torch::arange(6, torch::kLong));
  EXPECT_EQ(dataset.size(), 6);
  const auto batch = dataset.read(torch::tensor({4, 0}, torch::kLong));
  EXPECT_TRUE(batch.inputs.equal(torch::tensor({{8.0f, 9.0f}, {0.0f, 1.0f}})));
  EXPECT_TRUE(batch.targets.equal(torch::tensor({4, 0}, torch::kLong)));
}

}  // namespace
}  // namespace ddp::train
