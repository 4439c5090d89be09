#include "data/dataset.h"

#include <algorithm>
#include <cmath>
#include <new>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "data/csv_reader.h"
#include "data/idx_reader.h"
#include "data/synthetic.h"
#include "data/text_reader.h"
#include "runtime/memory/out_of_memory.h"

namespace ddp::data {
namespace {

void requirePath(const DatasetOptions& options, const char* what) {
  if (options.path.empty()) {
    throw DataError(
        fmt::format("data kind '{}' reads {}, but no path was given", options.kind, what));
  }
}

void requireTestFraction(const DatasetOptions& options) {
  if (!(options.testFraction > 0 && options.testFraction < 1)) {
    throw DataError(fmt::format("data kind '{}': testFraction must be in (0, 1), found {}",
                                options.kind, options.testFraction));
  }
}

DatasetSplits loadIdx(const DatasetOptions& options) {
  requirePath(options, "a directory of MNIST-format files");
  auto train = readMnistSplit(options.path, "train");
  auto test = readMnistSplit(options.path, "t10k");
  DatasetSplits splits;
  splits.sampleShape = train.images.sizes().slice(1).vec();
  splits.numClasses = 10;  // readMnistSplit accepts labels 0..9
  splits.train = {std::move(train.images), std::move(train.labels)};
  splits.test = {std::move(test.images), std::move(test.labels)};
  splits.description =
      fmt::format("idx: {}: train {} + test {} images {}, 10 classes", options.path,
                  splits.train.size(), splits.test.size(), fmt::join(splits.sampleShape, "x"));
  return splits;
}

// See loadDataset's comment in dataset.h for the split and the standardization.
DatasetSplits loadCsv(const DatasetOptions& options) {
  requirePath(options, "a .csv or .csv.gz file");
  requireTestFraction(options);
  auto table = readCsvFile(options.path);
  const std::int64_t rows = table.features.size(0);
  if (rows < 2) {
    throw DataError(fmt::format("{}: {} row: expected at least 2 (one to train on, one to test)",
                                options.path, rows));
  }
  const std::int64_t testCount = std::clamp<std::int64_t>(
      std::llround(options.testFraction * static_cast<double>(rows)), 1, rows - 1);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const auto order = torch::randperm(rows, generator);
  const auto trainRows = order.narrow(0, 0, rows - testCount);
  const auto testRows = order.narrow(0, rows - testCount, testCount);

  // Statistics in double from the train rows only: no information from the test split.
  const auto trainFeatures = table.features.index_select(0, trainRows).to(torch::kFloat64);
  const auto mean = trainFeatures.mean(0);                 // [F]
  auto stddev = trainFeatures.std(0, /*unbiased=*/false);  // [F]
  stddev = torch::where(stddev > 0, stddev, torch::ones_like(stddev));
  const auto standardize = [&](const torch::Tensor& rowsSelected) {
    return TensorDataset{
        ((table.features.index_select(0, rowsSelected).to(torch::kFloat64) - mean) / stddev)
            .to(torch::kFloat32),
        table.labels.index_select(0, rowsSelected)};
  };

  DatasetSplits splits;
  splits.train = standardize(trainRows);
  splits.test = standardize(testRows);
  splits.sampleShape = {table.features.size(1)};
  splits.numClasses = table.numClasses;
  splits.description = fmt::format(
      "csv: {}: {} rows x {} features, {} classes{}; train {} + test {} (shuffled with seed {}), "
      "features standardized with the train split's mean and std",
      options.path, rows, table.features.size(1), table.numClasses,
      table.classNames.empty() ? "" : fmt::format(" ({})", fmt::join(table.classNames, ", ")),
      splits.train.size(), splits.test.size(), options.seed);
  return splits;
}

DatasetSplits loadText(const DatasetOptions& options) {
  requirePath(options, "a text file");
  const auto text = readCharText(options.path);
  auto split = splitCharText(text, options.blockSize, options.testFraction);
  DatasetSplits splits;
  splits.train = {std::move(split.train.inputs), std::move(split.train.targets)};
  splits.test = {std::move(split.test.inputs), std::move(split.test.targets)};
  splits.sampleShape = {options.blockSize};
  splits.numClasses = static_cast<std::int64_t>(text.vocabulary.size());
  splits.description = fmt::format(
      "text: {}: {} bytes, vocabulary of {} bytes; train {} + test {} windows of {} characters "
      "(+1 target) from the first {} and the last {} bytes",
      options.path, text.tokens.size(0), splits.numClasses, splits.train.size(), splits.test.size(),
      options.blockSize, split.trainBytes, split.testBytes);
  return splits;
}

DatasetSplits loadSynthetic(const DatasetOptions& options) {
  SyntheticOptions synthetic;
  synthetic.shape = options.syntheticShape;
  synthetic.numClasses = options.syntheticClasses;
  synthetic.trainSamples = options.syntheticSamples;
  synthetic.testSamples = std::max<std::int64_t>(1, options.syntheticSamples / 4);
  synthetic.seed = options.seed;
  return makeSyntheticDataset(synthetic);
}

}  // namespace

std::vector<std::string> datasetKinds() { return {"idx", "csv", "text", "synthetic"}; }

DatasetSplits loadDataset(const DatasetOptions& options) {
  // Data that does not fit is the user's to change (exit 2), not a transient failure that a
  // restart would meet again: std::bad_alloc, and LibTorch's allocator failing, which is a
  // plain c10::Error that only its text tells apart.
  const auto tooLarge = [&](const std::string& detail) {
    return DataError(fmt::format(
        "data kind '{}'{}: the data does not fit in this process's memory ({}). Expected data "
        "that fits: use a smaller data set{}, or give the process more memory.",
        options.kind, options.kind == "synthetic" ? "" : " from '" + options.path + "'", detail,
        options.kind == "synthetic" ? " (--synthetic-samples)" : ""));
  };
  try {
    if (options.kind == "idx") return loadIdx(options);
    if (options.kind == "csv") return loadCsv(options);
    if (options.kind == "text") return loadText(options);
    if (options.kind == "synthetic") return loadSynthetic(options);
  } catch (const std::bad_alloc&) {
    throw tooLarge("std::bad_alloc");
  } catch (const c10::Error& e) {
    const auto detail = memory::hostOutOfMemoryDetail(e);
    if (!detail) throw;
    throw tooLarge(*detail);
  }
  throw DataError(fmt::format("unknown data kind '{}': expected one of {}", options.kind,
                              fmt::join(datasetKinds(), ", ")));
}

}  // namespace ddp::data
