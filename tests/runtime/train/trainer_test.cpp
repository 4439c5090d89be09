// Trainer with the user's own model, loss and data set, in one process (a Gloo group of
// one): it learns, reads through the Dataset interface, and a run stopped and resumed from
// its checkpoint ends with exactly the weights of an uninterrupted one. Failures: a
// non-finite step stops the run or is skipped (Note [Non-finite steps]), out of memory
// and a test split of another shape are permanent, the journal turns a run of stalled
// failures permanent (Note [Restart budget]), and a finished run leaves its marker.
#include "runtime/train/trainer.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <new>
#include <regex>
#include <set>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "runtime/metrics/training_metrics.h"
#include "runtime/train/checkpointer.h"
#include "runtime/train/run_journal.h"

#include "tests/support/error_of.h"

namespace ddp::train {
namespace {

namespace fs = std::filesystem;
using ddp::testing::errorOf;

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

// LinearFunctionDataset, with a NaN input at the given sample indices, or a failure
// (`Error`) when one of `failAt` is read.
class FaultyDataset : public LinearFunctionDataset {
 public:
  FaultyDataset(std::int64_t size, std::set<std::int64_t> nanAt, std::set<std::int64_t> failAt = {})
      : LinearFunctionDataset(size), nanAt_(std::move(nanAt)), failAt_(std::move(failAt)) {}
  Batch read(const at::Tensor& indices) override {
    auto batch = LinearFunctionDataset::read(indices);
    for (std::int64_t i = 0; i < indices.numel(); ++i) {
      const auto index = indices[i].item<std::int64_t>();
      if (failAt_.count(index)) throw std::runtime_error("the volume went away");
      if (nanAt_.count(index)) batch.inputs[i][0] = std::nanf("");
    }
    return batch;
  }

 private:
  std::set<std::int64_t> nanAt_, failAt_;
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

// In order, 16 samples a step: sample 83 is read by step 6 (positions [80, 96)).
TrainerOptions inOrder(const std::string& checkpointDir, std::int64_t maxSteps) {
  auto o = options(checkpointDir, maxSteps);
  o.shuffle = false;
  o.optimizer.name = "sgd";
  return o;
}

TEST_F(TrainerTest, NonFiniteLossStopsTheRunNamingTheStepAndTheSamples) {
  FaultyDataset train(256, {83}), test(64, {});
  auto model = std::make_shared<TwoLayerImpl>();
  const auto message = errorOf<TrainingFailedError>(
      [&] { Trainer(singleProcess(), model, inOrder("", 20), regression()).fit(train, test); });
  EXPECT_NE(message.find("non-finite loss or gradients at step 6 (epoch 0, positions [80, 96) "
                         "of each rank's shard in the sampler's order); rank 0's mean loss "
                         "over the step was nan"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("--skip-nonfinite-steps N"), std::string::npos) << message;
  EXPECT_EQ(exitCodeFor(TrainingFailedError(message)), kExitTrainingFailed);
  for (const auto& p : model->parameters()) {
    EXPECT_TRUE(torch::isfinite(p).all().item<bool>()) << "the NaN step was applied";
  }
}

TEST_F(TrainerTest, NonFiniteStepsAreSkippedUpToTheLimit) {
  auto o = inOrder("", 20);
  o.nonFiniteSkipLimit = 1;
  {
    FaultyDataset train(256, {83}), test(64, {});
    auto model = std::make_shared<TwoLayerImpl>();
    const auto result = Trainer(singleProcess(), model, o, regression()).fit(train, test);
    EXPECT_EQ(result.steps, 20);
    EXPECT_TRUE(std::isfinite(result.test.loss));
    for (const auto& p : model->parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
  }
  FaultyDataset train(256, {83, 150}), test(64, {});
  const auto message = errorOf<TrainingFailedError>([&] {
    Trainer(singleProcess(), std::make_shared<TwoLayerImpl>(), o, regression()).fit(train, test);
  });
  EXPECT_NE(message.find("at step 10 (epoch 0, positions [144, 160)"), std::string::npos)
      << message;
  EXPECT_NE(message.find("1 allowed now"), std::string::npos) << message;
}

// A model that runs out of memory in its third forward.
struct HungryImpl : TwoLayerImpl {
  explicit HungryImpl(bool badAlloc) : badAlloc(badAlloc) {}
  at::Tensor forward(const at::Tensor& x) {
    if (++calls == 3) {
      if (badAlloc) throw std::bad_alloc();
      return torch::empty({std::int64_t{1} << 50}, torch::kUInt8);  // 1 PiB
    }
    return TwoLayerImpl::forward(x);
  }
  bool badAlloc;
  int calls = 0;
};

TEST_F(TrainerTest, OutOfMemoryIsPermanentAndSaysWhatToLower) {
  for (const bool badAlloc : {false, true}) {
    LinearFunctionDataset train(256), test(64);
    const auto message = errorOf<TrainingFailedError>([&] {
      Trainer(singleProcess(), std::make_shared<HungryImpl>(badAlloc), options("", 10),
              regression())
          .fit(train, test);
    });
    EXPECT_NE(message.find("out of host memory at step 3 (batch-size 16 per rank)"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("Lower --batch-size"), std::string::npos) << message;
    EXPECT_EQ(message.find("frame #"), std::string::npos) << "a backtrace: " << message;
  }
}

// A test split of another sample shape: refused before the first step, not at the end.
class WideDataset : public Dataset {
 public:
  std::int64_t size() const override { return 32; }
  Batch read(const at::Tensor& indices) override {
    return {torch::zeros({indices.numel(), 4}), torch::zeros({indices.numel(), 1})};
  }
};

TEST_F(TrainerTest, TestSplitOfAnotherShapeIsRefusedAtStart) {
  LinearFunctionDataset train(256);
  WideDataset test;
  EXPECT_EQ(errorOf<ConfigError>([&] {
              Trainer(singleProcess(), std::make_shared<TwoLayerImpl>(), options("", 10),
                      regression())
                  .fit(train, test);
            }),
            "the test set's samples have inputs [4], targets [1], the training set's inputs "
            "[3], targets [1]: expected the same shape. Give a test split of the same data "
            "format");
  EXPECT_EQ(train.reads.load(), 1) << "one sample to compare, no training";
}

// Note [Restart budget]: three retryable failures in a row without a new checkpoint, then
// the fourth is permanent (exit 4); an attempt that checkpointed resets the count.
TEST_F(TrainerTest, StalledFailuresSpendTheRestartBudget) {
  const auto dir = (dir_ / "checkpoints").string();
  auto o = inOrder(dir, 40);
  o.maxStalledRestarts = 3;
  o.checkpointEvery = 5;
  // The exit code of one attempt that fails reading sample `failAt`, and its message.
  auto attempt = [&](std::int64_t failAt) -> std::pair<int, std::string> {
    FaultyDataset train(1024, {}, {failAt}), test(64, {});
    try {
      Trainer(singleProcess(), std::make_shared<TwoLayerImpl>(), o, regression()).fit(train, test);
    } catch (const std::exception& e) {
      return {exitCodeFor(e), e.what()};
    }
    return {0, "no exception"};
  };
  const std::pair<int, std::string> retryable{kExitTransient, "the volume went away"};
  // Fails in step 8 (sample 120): checkpoint 5 is new, so this one made progress.
  EXPECT_EQ(attempt(120), retryable);
  // Resumes from 5, fails in step 7 (sample 100) again and again: no new checkpoint.
  for (int stalled = 0; stalled < 3; ++stalled) {
    EXPECT_EQ(attempt(100), retryable) << "stalled failure " << stalled;
  }
  const auto [code, message] = attempt(100);
  EXPECT_EQ(code, kExitRestartsExhausted);
  EXPECT_NE(message.find("3 attempts in a row failed without a new checkpoint, and so did this "
                         "one: the volume went away. Exiting 4 (permanent)"),
            std::string::npos)
      << message;
  const RunJournal journal(dir);
  ASSERT_EQ(journal.entries().size(), 5u);
  EXPECT_EQ(journal.entries()[0].checkpointStep, 5);
  EXPECT_EQ(journal.entries()[0].exitCode, kExitTransient);
  EXPECT_EQ(journal.entries()[1].resumedStep, 5);
  EXPECT_EQ(journal.entries()[1].lastStep, 6);
  EXPECT_EQ(journal.entries()[4].exitCode, kExitRestartsExhausted);
  EXPECT_EQ(journal.entries()[4].cause, message);

  // A permanent exit ends the count; progress resets it too.
  EXPECT_EQ(attempt(100), retryable);
  EXPECT_EQ(attempt(200), retryable);  // step 13: checkpoint 10 is new
  EXPECT_EQ(attempt(200), retryable);  // stalled failure 1 of 3
}

// An attempt that never wrote its end (SIGKILL) counts as a retryable failure.
TEST_F(TrainerTest, AnAttemptWithoutAnEndRecordCountsAsAFailure) {
  const auto dir = dir_ / "checkpoints";
  fs::create_directories(dir);
  RunJournal lost(dir.string());
  lost.begin(-1);  // ... and the process died
  RunJournal next(dir.string());
  next.begin(-1);
  EXPECT_EQ(next.stalledFailuresBefore(), 1);
  EXPECT_FALSE(next.entries()[0].exitCode.has_value());
  EXPECT_NE(next.entries()[0].cause.find("ended without a record"), std::string::npos);
  next.end(0, "", 10, 10);
  std::ofstream(dir / RunJournal::kFileName, std::ios::app) << "{torn line\n";
  RunJournal reread(dir.string());  // a line that does not parse is dropped, not fatal
  EXPECT_EQ(reread.entries().size(), 2u);
  EXPECT_EQ(reread.entries()[1].exitCode, 0);
}

// Note [Completion marker]: with the final checkpoint, and only then.
TEST_F(TrainerTest, AFinishedRunLeavesItsCompletionMarker) {
  const auto dir = (dir_ / "checkpoints").string();
  LinearFunctionDataset train(256), test(64);
  auto o = options(dir, 12);
  o.configText = "the configuration\n";
  Trainer(singleProcess(), std::make_shared<TwoLayerImpl>(), o, regression()).fit(train, test);
  const auto marker = readCompletionMarker(dir);
  ASSERT_TRUE(marker.has_value());
  EXPECT_EQ(marker->step, 12);
  EXPECT_EQ(marker->checkpoint, "checkpoint-00000012.pt");
  EXPECT_EQ(marker->configText, "the configuration\n");
  EXPECT_EQ(fs::status(fs::path(dir) / RunJournal::kFileName).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
}

// Issue 17, item 7: runs appended to one metrics file tell apart.
TEST_F(TrainerTest, EachRunOfTheMetricsFileBeginsWithItsRecordAndEveryLineCarriesItsId) {
  fs::create_directories(dir_);
  const auto file = (dir_ / "metrics.jsonl").string();
  LinearFunctionDataset train(256), test(64);
  for (int run = 0; run < 2; ++run) {
    auto o = options("", 10);
    o.logEvery = 5;
    o.metricsFile = file;
    o.configText = R"({"model": "two-layer", "lr": 0.01})";
    Trainer(singleProcess(), std::make_shared<TwoLayerImpl>(), o, regression()).fit(train, test);
  }
  std::ifstream in(file);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  // run, train@5, train@10, final; twice.
  ASSERT_EQ(lines.size(), 8u);
  std::set<std::string> runIds;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const auto& line = lines[i];
    ASSERT_TRUE(line.contains("run_id") && line.contains("time")) << line;
    if (i % 4 == 0) {
      EXPECT_EQ(line["kind"], "run") << line;
      EXPECT_EQ(line["world_size"], 1);
      EXPECT_EQ(line["config"]["model"], "two-layer");
      EXPECT_TRUE(std::regex_match(line["start_time"].get<std::string>(),
                                   std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")))
          << line;
      runIds.insert(line["run_id"].get<std::string>());
    } else {
      EXPECT_EQ(line["run_id"], lines[i - i % 4]["run_id"]) << line;
    }
  }
  EXPECT_EQ(runIds.size(), 2u);
}

// Note [Training metrics]: what fit() leaves in the registry the metrics file is written from.
TEST_F(TrainerTest, FitRecordsStepsLossCheckpointsAndTheEvaluation) {
  LinearFunctionDataset train(256), test(64);
  auto o = options((dir_ / "ck").string(), 12);
  o.logEvery = 4;
  Trainer(singleProcess(), std::make_shared<TwoLayerImpl>(), o, regression()).fit(train, test);
  const auto s = metrics::snapshot();
  EXPECT_EQ(s["step"], 12);
  EXPECT_EQ(s["total_steps"], 12);
  EXPECT_GT(s["last_step_unix"].get<double>(), 1.7e9);
  EXPECT_TRUE(s.contains("loss") && s["loss"].get<double>() > 0) << s;
  EXPECT_EQ(s["learning_rate"], 0.01);
  EXPECT_EQ(s["checkpoint"]["step"], 12);
  EXPECT_GT(s["checkpoint"]["bytes"].get<std::int64_t>(), 0);
  // The final checkpoint is synchronous: training waited for all of it.
  EXPECT_EQ(s["checkpoint"]["blocked_seconds"], s["checkpoint"]["seconds"]) << s;
  EXPECT_TRUE(s["eval"].contains("loss"));
  EXPECT_FALSE(s["eval"].contains("accuracy")) << "regression has no accuracy";
  EXPECT_GT(s["phase_seconds"]["forward-backward"].get<double>(), 0) << s;
  EXPECT_GT(s["phase_seconds"]["checkpoint"].get<double>(), 0) << s;
  EXPECT_FALSE(s["compute"]["straggler"].get<bool>()) << "one rank is its own median";
  auto bad = o;
  bad.stragglerThreshold = 0;
  EXPECT_THROW(Trainer(singleProcess(), std::make_shared<TwoLayerImpl>(), bad, regression()),
               ConfigError);
}

}  // namespace
}  // namespace ddp::train
