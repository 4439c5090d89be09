#include "data/synthetic.h"

#include <algorithm>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

namespace ddp::data {

DatasetSplits makeSyntheticDataset(const SyntheticOptions& options) {
  const bool shapeValid =
      !options.shape.empty() &&
      std::all_of(options.shape.begin(), options.shape.end(), [](auto size) { return size >= 1; });
  if (!shapeValid) {
    throw DataError(
        fmt::format("synthetic data: expected a sample shape of sizes >= 1 (e.g. "
                    "1,28,28 or 20), found [{}]",
                    fmt::join(options.shape, ",")));
  }
  if (options.numClasses < 2) {
    throw DataError(
        fmt::format("synthetic data: expected at least 2 classes, found {}", options.numClasses));
  }
  if (options.trainSamples < 1 || options.testSamples < 1) {
    throw DataError(
        fmt::format("synthetic data: expected at least 1 train and 1 test sample, "
                    "found {} and {}",
                    options.trainSamples, options.testSamples));
  }
  std::int64_t features = 1;
  for (const auto size : options.shape) features *= size;

  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  // Rows of unit norm: every class's score W_c x is then N(0, 1), so no class dominates
  // by the length of its row. Scores in double, so that rounding (which may differ with
  // the number of threads) cannot flip a label.
  auto teacher = torch::randn({options.numClasses, features}, generator, torch::kFloat64);
  teacher = teacher / teacher.norm(2, {1}, /*keepdim=*/true);
  std::vector<std::int64_t> batchShape{0};
  batchShape.insert(batchShape.end(), options.shape.begin(), options.shape.end());
  const auto draw = [&](std::int64_t count) {
    auto x = torch::randn({count, features}, generator, torch::kFloat32);  // [N, prod(shape)]
    auto labels = x.to(torch::kFloat64).matmul(teacher.t()).argmax(1);     // [N]
    batchShape[0] = count;
    return TensorDataset{x.reshape(batchShape), labels};
  };

  DatasetSplits splits;
  splits.train = draw(options.trainSamples);  // first from the stream, then the test
  splits.test = draw(options.testSamples);
  splits.sampleShape = options.shape;
  splits.numClasses = options.numClasses;
  splits.description = fmt::format(
      "synthetic: {} train + {} test samples of shape {}, {} classes from a random linear "
      "teacher (seed {})",
      options.trainSamples, options.testSamples, fmt::join(options.shape, "x"), options.numClasses,
      options.seed);
  return splits;
}

}  // namespace ddp::data
