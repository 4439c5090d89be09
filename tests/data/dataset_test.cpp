#include "data/dataset.h"

#include <gtest/gtest.h>

#include <filesystem>

#include <fmt/format.h>
#include <torch/torch.h>

#include "tests/data/data_test_files.h"
#include "tests/support/fuzz.h"

namespace ddp::data {
namespace {

using testing::expectDataError;
using testing::TempDir;
namespace fuzz = ddp::testing::fuzz;

DatasetOptions optionsFor(const std::string& kind, const std::string& path) {
  DatasetOptions options;
  options.kind = kind;
  options.path = path;
  return options;
}

TEST(LoadDatasetTest, IdxReadsFashionMnistTrainAndTestFiles) {
  DDPRUN_SKIP_UNLESS_EXISTS(testing::kFashionMnistDir, "dataset-fashion-mnist");
  const auto data = loadDataset(optionsFor("idx", testing::kFashionMnistDir));
  EXPECT_EQ(data.train.size(), 60000);
  EXPECT_EQ(data.test.size(), 10000);
  EXPECT_EQ(data.sampleShape, (std::vector<std::int64_t>{1, 28, 28}));
  EXPECT_EQ(data.numClasses, 10);
  EXPECT_EQ(data.train.inputs.scalar_type(), torch::kFloat32);
  EXPECT_EQ(data.train.targets.scalar_type(), torch::kInt64);
  EXPECT_NE(data.description.find(testing::kFashionMnistDir), std::string::npos)
      << data.description;
}

TEST(LoadDatasetTest, CsvSplitsIrisWithTheSeed) {
  const auto path = testing::kSklearnDataDir + "/iris.csv";
  DDPRUN_SKIP_UNLESS_EXISTS(path, "python3-sklearn");
  const auto data = loadDataset(optionsFor("csv", path));
  EXPECT_EQ(data.train.size(), 120);
  EXPECT_EQ(data.test.size(), 30);
  EXPECT_EQ(data.sampleShape, (std::vector<std::int64_t>{4}));
  EXPECT_EQ(data.numClasses, 3);
  EXPECT_EQ(data.train.inputs.scalar_type(), torch::kFloat32);
  // All 150 rows, each in one split: 50 of every class in all.
  EXPECT_TRUE(torch::equal(torch::bincount(torch::cat({data.train.targets, data.test.targets})),
                           torch::full({3}, 50, torch::kInt64)));
  EXPECT_NE(data.description.find("setosa, versicolor, virginica"), std::string::npos)
      << data.description;

  const auto again = loadDataset(optionsFor("csv", path));
  EXPECT_TRUE(torch::equal(data.test.inputs, again.test.inputs));
  auto otherSeed = optionsFor("csv", path);
  otherSeed.seed = 43;
  EXPECT_FALSE(torch::equal(data.test.targets, loadDataset(otherSeed).test.targets));
}

// Features standardized with the train split's statistics, applied unchanged to the test
// split: train columns have mean 0 and std 1, and one affine map serves both splits.
TEST(LoadDatasetTest, CsvStandardizesWithTrainStatisticsOnly) {
  TempDir dir("dataset_test");
  // Column 1 is the row number i (0..99), column 2 a constant, the label i % 2.
  std::string content;
  for (int i = 0; i < 100; ++i) content += fmt::format("{},5,{}\n", i, i % 2);
  auto options = optionsFor("csv", dir.write("ramp.csv", content));
  options.testFraction = 0.25;
  const auto data = loadDataset(options);
  ASSERT_EQ(data.train.size(), 75);
  ASSERT_EQ(data.test.size(), 25);

  const auto train = data.train.inputs.to(torch::kFloat64);
  EXPECT_NEAR(train.select(1, 0).mean().item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(train.select(1, 0).std(/*unbiased=*/false).item<double>(), 1.0, 1e-6);
  // The constant column: centred, not divided by its std of 0.
  EXPECT_TRUE(torch::equal(data.train.inputs.select(1, 1), torch::zeros({75})));
  EXPECT_TRUE(torch::equal(data.test.inputs.select(1, 1), torch::zeros({25})));
  // Both splits on one evenly spaced grid (i - mean) / std: sorted, every step the same.
  const auto all = std::get<0>(
      torch::cat({data.train.inputs.select(1, 0), data.test.inputs.select(1, 0)}).sort());
  const auto steps = all.narrow(0, 1, 99) - all.narrow(0, 0, 99);
  EXPECT_LT((steps - steps[0]).abs().max().item<float>(), 1e-5f) << steps;
  // Statistics of the test split alone would have moved its mean to 0; the train's do not.
  // (Its raw mean differs from the train's by at least 2/75: the 100 rows sum to 4950.)
  EXPECT_GT(data.test.inputs.select(1, 0).mean().abs().item<float>(), 5e-4f);
}

TEST(LoadDatasetTest, TextGivesShiftedTokenWindows) {
  DDPRUN_SKIP_UNLESS_EXISTS(testing::kOpticksText, "golang-github-andybalholm-brotli-dev");
  auto options = optionsFor("text", testing::kOpticksText);
  options.blockSize = 32;
  const auto data = loadDataset(options);
  const auto length = static_cast<std::int64_t>(std::filesystem::file_size(testing::kOpticksText));
  EXPECT_EQ(data.train.size(), static_cast<std::int64_t>(0.8 * static_cast<double>(length)) / 33);
  EXPECT_EQ(data.sampleShape, (std::vector<std::int64_t>{32}));
  EXPECT_EQ(data.train.inputs.scalar_type(), torch::kInt64);
  EXPECT_EQ(data.test.targets.sizes(), (std::vector<std::int64_t>{data.test.size(), 32}));
  for (const auto* split : {&data.train, &data.test}) {
    EXPECT_TRUE(torch::equal(split->inputs.narrow(1, 1, 31), split->targets.narrow(1, 0, 31)));
  }
  EXPECT_EQ(data.numClasses, data.train.inputs.max().item<std::int64_t>() + 1);

  TempDir dir("dataset_test");
  options.path = dir.write("short.txt", "too short");
  expectDataError([&] { loadDataset(options); }, {"short.txt", "needs at least"});
}

TEST(LoadDatasetTest, SyntheticHasAQuarterForTesting) {
  DatasetOptions options;
  options.kind = "synthetic";
  options.syntheticSamples = 400;
  options.syntheticShape = {3, 32, 32};
  options.syntheticClasses = 4;
  const auto data = loadDataset(options);
  EXPECT_EQ(data.train.inputs.sizes(), (std::vector<std::int64_t>{400, 3, 32, 32}));
  EXPECT_EQ(data.test.size(), 100);
  EXPECT_EQ(data.sampleShape, (std::vector<std::int64_t>{3, 32, 32}));
  EXPECT_EQ(data.numClasses, 4);
}

TEST(LoadDatasetTest, OptionsThatCannotWorkAreRefused) {
  expectDataError([] { loadDataset(optionsFor("parquet", "x")); },
                  {"unknown data kind 'parquet': expected one of idx, csv, text, synthetic"});
  expectDataError([] { loadDataset(optionsFor("csv", "")); },
                  {"data kind 'csv' reads a .csv or .csv.gz file, but no path was given"});
  auto options = optionsFor("csv", "/nonexistent/x.csv");
  options.testFraction = 0;
  expectDataError([&] { loadDataset(options); }, {"testFraction must be in (0, 1), found 0"});
  expectDataError([] { loadDataset(optionsFor("idx", "/nonexistent")); },
                  {"/nonexistent", "train-images-idx3-ubyte"});
  TempDir dir("dataset_test");
  expectDataError([&] { loadDataset(optionsFor("csv", dir.write("one.csv", "1,2,0\n"))); },
                  {"one.csv: 1 row: expected at least 2"});
}

// Data that does not fit in memory is a DataError (exit 2: a retry would fail again), not
// c10's "DefaultCPUAllocator: can't allocate memory" (exit 200, retried): 16 MiB of text
// are 128 MiB of int64 tokens, and a trillion synthetic samples more than any machine has.
// Each is loaded in a child under a 64 MiB limit (tests/support/fuzz.h judges it).
TEST(LoadDatasetTest, DataThatDoesNotFitInMemoryIsADataError) {
  TempDir dir("dataset_test");
  const std::string text = dir.write("big.txt", std::string(16 << 20, 'a'));
  const auto load = [&text](const std::string& kind) {
    DatasetOptions options;
    options.kind = kind;
    options.path = text;
    options.syntheticSamples = std::int64_t{1} << 40;
    loadDataset(options);
  };
  const auto report =
      fuzz::runEachOnce("dataset_memory", {"text", "synthetic"}, load,
                        "does not fit in this process's memory", std::size_t{64} << 20);
  EXPECT_EQ(report.rejected, 2) << report.describeFindings();
}

}  // namespace
}  // namespace ddp::data
