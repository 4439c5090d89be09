// A generated classification data set, for benchmarks and tests that need data of any
// shape without a file. Learnable by construction: a fixed random linear "teacher"
// labels every sample, so a model that fits the teacher reaches 100% accuracy.
//   inputs   x ~ N(0, 1), float32 [N, shape...]
//   labels   argmax over classes of W x,  W ~ N(0, 1) [numClasses, prod(shape)]
// Everything comes from one generator seeded with `seed`: the same options give the same
// tensors on every rank and every run (of one torch version). The test samples are drawn
// after the train samples from the same stream, so the splits share no sample.
#pragma once

#include <cstdint>
#include <vector>

#include "data/dataset.h"

namespace ddp::data {

struct SyntheticOptions {
  std::vector<std::int64_t> shape = {1, 28, 28};  // one sample's shape
  std::int64_t numClasses = 10;
  std::int64_t trainSamples = 4096;
  std::int64_t testSamples = 1024;
  std::uint64_t seed = 42;
};

// Throws DataError for options that cannot work (an empty shape or a size < 1, fewer
// than 2 classes, no train or test samples).
DatasetSplits makeSyntheticDataset(const SyntheticOptions& options);

}  // namespace ddp::data
