// Note [Checkpoint contents]: a payload written by makeCheckpointPayload and read back
// through torch's pickler restores model, optimizer state, progress and the generator
// exactly, and a payload that does not fit is refused naming what differs.
#include "runtime/train/train_state.h"

#include <gtest/gtest.h>

#include <torch/torch.h>

#include "runtime/train/checkpointer.h"

namespace ddp::train {
namespace {

torch::nn::Sequential makeModel(std::int64_t hidden = 8) {
  return torch::nn::Sequential(torch::nn::Linear(4, hidden), torch::nn::ReLU(),
                               torch::nn::BatchNorm1d(hidden), torch::nn::Linear(hidden, 3));
}

// A few steps so that momentum buffers, BatchNorm statistics and weights are not initial.
void train(torch::nn::Sequential& model, torch::optim::Optimizer& optimizer) {
  for (int step = 0; step < 3; ++step) {
    optimizer.zero_grad();
    auto loss = model->forward(torch::randn({16, 4})).pow(2).mean();
    loss.backward();
    optimizer.step();
  }
}

// The payload as a checkpoint file holds it: pickled and unpickled.
c10::IValue throughPickle(const c10::IValue& payload) {
  const auto bytes = torch::pickle_save(payload);
  return torch::pickle_load(bytes);
}

std::string errorOf(const std::function<void()>& call) {
  try {
    call();
  } catch (const CheckpointMismatchError& e) {
    EXPECT_EQ(exitCodeFor(e), kExitUsage) << "a restart would read the same file";
    return e.what();
  }
  return "no CheckpointMismatchError";
}

TEST(TrainStateTest, RestoresModelOptimizerProgressAndGenerator) {
  for (const std::string name : {"sgd", "adam", "adamw"}) {
    torch::manual_seed(1);
    OptimizerOptions options{.name = name, .lr = 0.1};
    auto saved = makeModel();
    auto savedOptimizer = makeOptimizer(options, saved->parameters());
    train(saved, *savedOptimizer);
    const TrainProgress progress{
        .step = 30, .epoch = 2, .samplerStart = 64, .seed = 7, .numSamples = 500, .worldSize = 2};
    torch::manual_seed(99);
    const auto rank1Generator = cpuRngState();
    const auto expectedDraw = torch::rand({4});
    const auto payload = throughPickle(
        makeCheckpointPayload({*saved, *savedOptimizer, options}, progress,
                              {torch::zeros_like(rank1Generator), rank1Generator}, "lr: 0.1\n"));

    torch::manual_seed(2);
    auto restored = makeModel();
    auto restoredOptimizer = makeOptimizer(options, restored->parameters());
    const auto back = restoreCheckpoint(payload, "x.pt", {*restored, *restoredOptimizer, options},
                                        /*rank=*/1, /*worldSize=*/2, torch::kCPU);
    EXPECT_EQ(back.step, 30);
    EXPECT_EQ(back.epoch, 2);
    EXPECT_EQ(back.samplerStart, 64);
    EXPECT_EQ(back.seed, 7u);
    EXPECT_EQ(back.numSamples, 500);
    EXPECT_EQ(back.worldSize, 2);
    EXPECT_TRUE(torch::rand({4}).equal(expectedDraw)) << name << ": rank 1's generator";

    const auto a = saved->named_parameters(), b = restored->named_parameters();
    for (const auto& p : a) EXPECT_TRUE(p.value().equal(b[p.key()])) << name << " " << p.key();
    const auto ab = saved->named_buffers(), bb = restored->named_buffers();
    for (const auto& p : ab) EXPECT_TRUE(p.value().equal(bb[p.key()])) << name << " " << p.key();
    // The same next step from the same state: the optimizer state came back too.
    torch::manual_seed(5);
    train(saved, *savedOptimizer);
    torch::manual_seed(5);
    train(restored, *restoredOptimizer);
    for (const auto& p : saved->named_parameters()) {
      EXPECT_TRUE(p.value().equal(restored->named_parameters()[p.key()])) << name << " " << p.key();
    }
  }
}

TEST(TrainStateTest, AnotherWorldSizeKeepsTheGenerator) {
  OptimizerOptions options;
  auto model = makeModel();
  auto optimizer = makeOptimizer(options, model->parameters());
  const auto payload = makeCheckpointPayload({*model, *optimizer, options}, {.worldSize = 2},
                                             {cpuRngState(), cpuRngState()}, "");
  torch::manual_seed(3);
  const auto before = cpuRngState();
  restoreCheckpoint(payload, "x.pt", {*model, *optimizer, options}, 0, /*worldSize=*/4,
                    torch::kCPU);
  EXPECT_TRUE(cpuRngState().equal(before));
}

TEST(TrainStateTest, RefusesAPayloadThatDoesNotFit) {
  OptimizerOptions sgd;
  auto model = makeModel();
  auto optimizer = makeOptimizer(sgd, model->parameters());
  const auto payload = makeCheckpointPayload({*model, *optimizer, sgd}, {}, {cpuRngState()}, "");

  auto wider = makeModel(16);
  auto widerOptimizer = makeOptimizer(sgd, wider->parameters());
  EXPECT_EQ(errorOf([&] {
              restoreCheckpoint(payload, "x.pt", {*wider, *widerOptimizer, sgd}, 0, 1, torch::kCPU);
            }),
            "'0.weight' has shape [8,4] in the checkpoint, [16,4] in the model");

  OptimizerOptions adam{.name = "adam"};
  auto adamOptimizer = makeOptimizer(adam, model->parameters());
  EXPECT_EQ(errorOf([&] {
              restoreCheckpoint(payload, "x.pt", {*model, *adamOptimizer, adam}, 0, 1, torch::kCPU);
            }),
            "the checkpoint holds sgd optimizer state, this run uses --optimizer adam; resume "
            "with --optimizer sgd or start fresh with --resume none");

  auto foreign = c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
  foreign.insert("format", std::string("something-else"));
  EXPECT_EQ(errorOf([&] {
              restoreCheckpoint(foreign, "x.pt", {*model, *optimizer, sgd}, 0, 1, torch::kCPU);
            }),
            "'x.pt' is not a ddprun checkpoint (format 'something-else', expected "
            "'ddprun-checkpoint-v1')");
}

}  // namespace
}  // namespace ddp::train
