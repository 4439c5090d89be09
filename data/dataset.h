// Data sets by kind, for ddptrain and the benchmarks: one call turns the --data options
// into a train and a test split held in memory, plus what the model needs to know about
// them (one sample's shape, the number of classes).
//
//   kind       path                                   samples
//   idx        directory of MNIST-format files        images  float32 [N,1,H,W] in [0,1]
//   csv        a .csv or .csv.gz file (csv_reader.h)  tabular float32 [N,F], standardized
//   text       a text file, plain or .gz              tokens  int64 [N,T] (T = blockSize)
//   synthetic  none: generated (synthetic.h)          float32 [N, syntheticShape...]
//
// Every rank calls loadDataset with the same options and gets the same splits (the
// shuffle and the generator are seeded), so the distributed sampler can shard them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "data/data_error.h"

namespace ddp::data {

// An in-memory labelled data set: sample i is (inputs[i], targets[i]).
struct TensorDataset {
  // idx images float32 [N,C,H,W] in [0,1]; csv float32 [N,F] (standardized);
  // text int64 [N,T]; synthetic float32 [N, syntheticShape...] ~ N(0, 1)
  torch::Tensor inputs;
  torch::Tensor targets;  // classes int64 [N]; text int64 [N,T] (the next characters)
  std::int64_t size() const { return inputs.size(0); }
};

struct DatasetSplits {
  TensorDataset train;
  TensorDataset test;
  std::vector<std::int64_t> sampleShape;  // inputs.sizes() without N
  std::int64_t numClasses = 0;            // classes, or vocabulary size for text
  std::string description;                // one line for the log: what was read, from where, sizes
};

struct DatasetOptions {
  std::string kind = "idx";  // idx | csv | text | synthetic
  // idx: directory with train-*/t10k-* files; csv, text: a file (.gz or plain)
  std::string path;
  double testFraction = 0.2;    // csv and text: held-out share (idx has its own test files)
  std::uint64_t seed = 42;      // csv: the shuffle before the split; synthetic: the generator
  std::int64_t blockSize = 64;  // text: characters per sample
  // synthetic: train samples (+ a quarter as many for test), one sample's shape, classes
  std::int64_t syntheticSamples = 4096;
  std::vector<std::int64_t> syntheticShape = {1, 28, 28};
  std::int64_t syntheticClasses = 10;
};

// The kinds loadDataset knows, in the order of the table above.
std::vector<std::string> datasetKinds();

// Reads or generates the splits. Throws DataError for input that cannot be used (missing
// or malformed files, a text too short for one window per split) and for options that
// cannot work with it (an unknown kind, testFraction outside (0, 1), blockSize < 1, ...).
//
// csv: the rows are shuffled with `seed`, round(testFraction * N) of them (at least one,
//   and at least one left for training) become the test split, and then every feature is
//   standardized with the mean and standard deviation (ddof 0) of the train split alone,
//   as scikit-learn's StandardScaler fitted on the train split; a feature that is constant
//   in the train split is only centred (its std is taken as 1).
// text: Note [Character windows] in text_reader.h.
DatasetSplits loadDataset(const DatasetOptions& options);

}  // namespace ddp::data
