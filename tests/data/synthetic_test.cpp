#include "data/synthetic.h"

#include <gtest/gtest.h>

#include <torch/torch.h>

#include "tests/data/data_test_files.h"

namespace ddp::data {
namespace {

using testing::expectDataError;

SyntheticOptions small(std::vector<std::int64_t> shape, std::uint64_t seed = 7) {
  SyntheticOptions options;
  options.shape = std::move(shape);
  options.numClasses = 5;
  options.trainSamples = 600;
  options.testSamples = 200;
  options.seed = seed;
  return options;
}

TEST(SyntheticTest, ShapesAndLabels) {
  for (const auto& shape : std::vector<std::vector<std::int64_t>>{{1, 28, 28}, {3, 8, 8}, {20}}) {
    const auto data = makeSyntheticDataset(small(shape));
    auto expected = shape;
    expected.insert(expected.begin(), 600);
    EXPECT_EQ(data.train.inputs.sizes(), expected);
    EXPECT_EQ(data.train.inputs.scalar_type(), torch::kFloat32);
    EXPECT_EQ(data.test.inputs.size(0), 200);
    EXPECT_EQ(data.train.targets.sizes(), (std::vector<std::int64_t>{600}));
    EXPECT_EQ(data.train.targets.scalar_type(), torch::kInt64);
    EXPECT_EQ(data.sampleShape, shape);
    EXPECT_EQ(data.numClasses, 5);
    // Every class is there, none dominates (1/5 each, give or take).
    const auto counts = torch::bincount(data.train.targets, {}, 5);
    EXPECT_EQ(counts.size(0), 5);
    EXPECT_GT(counts.min().item<std::int64_t>(), 600 / 5 / 3) << counts;
  }
}

TEST(SyntheticTest, TheSeedDecidesEverything) {
  const auto a = makeSyntheticDataset(small({3, 8, 8}));
  const auto b = makeSyntheticDataset(small({3, 8, 8}));
  const auto c = makeSyntheticDataset(small({3, 8, 8}, /*seed=*/8));
  EXPECT_TRUE(torch::equal(a.train.inputs, b.train.inputs));
  EXPECT_TRUE(torch::equal(a.train.targets, b.train.targets));
  EXPECT_TRUE(torch::equal(a.test.inputs, b.test.inputs));
  EXPECT_TRUE(torch::equal(a.test.targets, b.test.targets));
  EXPECT_FALSE(torch::equal(a.train.inputs, c.train.inputs));
  EXPECT_FALSE(torch::equal(a.train.targets, c.train.targets));
}

TEST(SyntheticTest, TrainAndTestShareNoSample) {
  const auto data = makeSyntheticDataset(small({3, 8, 8}));
  const auto train = data.train.inputs.flatten(1);   // [600, 192]
  const auto test = data.test.inputs.flatten(1);     // [200, 192]
  const auto distances = torch::cdist(test, train);  // [200, 600]
  EXPECT_GT(distances.min().item<float>(), 1.0f);
}

// The labels come from a linear teacher, so a linear model learns them: well above the
// 20% of guessing, on samples it has not seen.
TEST(SyntheticTest, IsLearnable) {
  torch::manual_seed(0);
  auto options = small({20});
  options.trainSamples = 2000;
  const auto data = makeSyntheticDataset(options);
  torch::nn::Linear model(20, 5);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(0.05));
  for (int step = 0; step < 200; ++step) {
    optimizer.zero_grad();
    torch::nn::functional::cross_entropy(model(data.train.inputs), data.train.targets).backward();
    optimizer.step();
  }
  torch::NoGradGuard noGrad;
  const auto accuracy =
      model(data.test.inputs).argmax(1).eq(data.test.targets).to(torch::kFloat32).mean();
  EXPECT_GT(accuracy.item<float>(), 0.85f);
}

TEST(SyntheticTest, BadOptionsAreRefused) {
  auto options = small({1, 0, 28});
  expectDataError([&] { makeSyntheticDataset(options); },
                  {"expected a sample shape of sizes >= 1", "found [1,0,28]"});
  options = small({});
  expectDataError([&] { makeSyntheticDataset(options); }, {"found []"});
  options = small({4});
  options.numClasses = 1;
  expectDataError([&] { makeSyntheticDataset(options); }, {"expected at least 2 classes, found 1"});
  options = small({4});
  options.testSamples = 0;
  expectDataError([&] { makeSyntheticDataset(options); }, {"found 600 and 0"});
}

}  // namespace
}  // namespace ddp::data
