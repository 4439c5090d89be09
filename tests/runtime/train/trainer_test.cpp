// Trainer with the user's own model, loss and data set, in one process (a Gloo group of
// one): it learns, reads through the Dataset interface, and a run stopped and resumed from
// its checkpoint ends with exactly the weights of an uninterrupted one.
#include "runtime/train/trainer.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include <torch/torch.h>

namespace ddp::train {
namespace {

namespace fs = std::filesystem;

// Not from the model zoo, not a Sequential: a module of its own.
struct TwoLayerImpl : torch::nn::Module {
  TwoLayerImpl() {
    first = register_module("first", torch::nn::Linear(3, 16));
    second = register_module("second", torch::nn::Linear(16, 1));
  }
  at::Tensor forward(const at::Tensor& x) {
    return second->forward(torch::tanh(first->forward(x)));
  }
  torch::nn::Linear first{nullptr}, second{nullptr};
};

// y = x . (1, -2, 0.5) computed on demand for the samples asked for, counting reads.
class LinearFunctionDataset : public Dataset {
 public:
  explicit LinearFunctionDataset(std::int64_t size) : size_(size) {}
  std::int64_t size() const override { return size_; }
  Batch read(const at::Tensor& indices) override {
    ++reads;
    auto x =
        torch::sin(indices.to(torch::kFloat32).unsqueeze(1) * torch::tensor({0.1f, 0.37f, 0.71f}));
    auto y = (x * torch::tensor({1.0f, -2.0f, 0.5f})).sum(1, /*keepdim=*/true);
    return {x, y};
  }
  std::atomic<int> reads{0};

 private:
  std::int64_t size_;
};

Distributed& singleProcess() {
  static Distributed dist = init({.backend = "gloo", .environment = env::EnvMap{}});
  return dist;
}

TrainerOptions options(const std::string& checkpointDir, std::int64_t maxSteps) {
  TrainerOptions o;
  o.maxSteps = maxSteps;
  o.batchSize = 16;
  o.optimizer = {.name = "adam", .lr = 0.01};
  o.logEvery = 1000;
  o.checkpointDir = checkpointDir;
  o.checkpointEvery = 5;
  return o;
}

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ddprun_trainer_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(TrainerTest, LearnsWithTheUsersModelLossAndData) {
  torch::manual_seed(0);
  auto model = std::make_shared<TwoLayerImpl>();
  LinearFunctionDataset train(512), test(128);
  Trainer trainer(singleProcess(), model, options("", 150), regression());
  const auto before = trainer.evaluate(test);
  const auto result = trainer.fit(train, test);
  EXPECT_EQ(result.steps, 150);
  EXPECT_LT(result.test.loss, before.loss / 10) << "before " << before.loss;
  EXPECT_DOUBLE_EQ(result.test.value("mse"), result.test.loss);
  EXPECT_GE(train.reads.load(), 150) << "every micro-batch read through the Dataset";
  EXPECT_THROW(result.test.value("accuracy"), ConfigError);
}

TEST_F(TrainerTest, ResumedRunEndsWithTheWeightsOfAnUninterruptedOne) {
  LinearFunctionDataset train(256), test(64);
  torch::manual_seed(0);
  auto straight = std::make_shared<TwoLayerImpl>();
  Trainer(singleProcess(), straight, options((dir_ / "straight").string(), 40), regression())
      .fit(train, test);

  torch::manual_seed(0);
  auto first = std::make_shared<TwoLayerImpl>();
  Trainer(singleProcess(), first, options((dir_ / "resumed").string(), 15), regression())
      .fit(train, test);
  torch::manual_seed(123);  // another start: the checkpoint decides
  auto second = std::make_shared<TwoLayerImpl>();
  const auto result =
      Trainer(singleProcess(), second, options((dir_ / "resumed").string(), 40), regression())
          .fit(train, test);
  EXPECT_EQ(result.resumedFrom, 15);
  EXPECT_EQ(result.steps, 40);
  for (const auto& p : straight->named_parameters()) {
    EXPECT_TRUE(p.value().equal(second->named_parameters()[p.key()]))
        << p.key() << " max diff "
        << (p.value() - second->named_parameters()[p.key()]).abs().max().item<float>();
  }
}

// Once: samplesPerStep wrapped to 0 and the shard was divided by it (SIGFPE).
TEST_F(TrainerTest, RefusesABatchThatOverflows) {
  auto o = options("", 1);
  o.batchSize = 4611686018427387904;  // 2^62
  o.gradAccumulation = 4;
  try {
    Trainer(singleProcess(), std::make_shared<TwoLayerImpl>(), o, regression());
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("overflows 64 bits"), std::string::npos) << e.what();
  }
}

TEST_F(TrainerTest, RefusesAnObjectiveWithoutLoss) {
  EXPECT_THROW(
      Trainer(singleProcess(), std::make_shared<TwoLayerImpl>(), options("", 1), Objective{}),
      ConfigError);
}

}  // namespace
}  // namespace ddp::train
