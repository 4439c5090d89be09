// Note [Checkpoint contents]: a payload written by makeCheckpointPayload and read back
// through torch's pickler restores model, optimizer state, progress and the generator
// exactly, and a payload that does not fit is refused naming what differs.
#include "runtime/train/train_state.h"

#include <gtest/gtest.h>

#include <functional>

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
  } catch (const c10::Error& e) {
    return std::string("c10::Error instead: ") + e.what_without_backtrace();
  } catch (const std::exception& e) {
    return std::string("another error instead: ") + e.what();
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

// Note [Reading a payload]: a file with our format string but a missing or mistyped entry
// once failed with c10's "Argument passed to at() was not in the map." or "Expected Int but
// got String" (transient, exit 200, restarted forever), naming neither file nor entry.
TEST(TrainStateTest, RefusesAMissingOrMistypedEntryNamingFileAndEntry) {
  OptimizerOptions adam{.name = "adam"};
  auto model = makeModel();
  auto optimizer = makeOptimizer(adam, model->parameters());
  train(model, *optimizer);
  const auto good = throughPickle(makeCheckpointPayload({*model, *optimizer, adam}, {.step = 3},
                                                        {cpuRngState()}, ""))
                        .toGenericDict();
  // `good` with one entry changed by `edit`, as a file would hold it.
  auto edited = [&](const std::function<void(c10::impl::GenericDict&)>& edit) {
    auto payload = throughPickle(good).toGenericDict();
    edit(payload);
    return throughPickle(payload);
  };
  auto child = [](const c10::impl::GenericDict& dict, const char* key) {
    return dict.at(key).toGenericDict();  // shares storage: edits reach the payload
  };
  const std::string prefix = "'ckpt/checkpoint-00000003.pt' is marked 'ddprun-checkpoint-v1' but ";
  const std::string hint =
      ": it was written by another program or edited. Resume from another checkpoint (--resume "
      "PATH), or start fresh with --resume none";
  const std::vector<std::pair<std::function<void(c10::impl::GenericDict&)>, std::string>> cases{
      {[](auto& d) { d.erase("model"); }, "has no 'model' (expected a dict)"},
      {[](auto& d) { d.insert_or_assign("step", std::string("3")); },
       "its 'step' is the string '3', expected an int"},
      {[](auto& d) { d.erase("world_size"); }, "has no 'world_size' (expected an int)"},
      {[&](auto& d) { child(d, "sampler").erase("num_samples"); },
       "has no 'sampler.num_samples' (expected an int)"},
      {[](auto& d) { d.insert_or_assign("sampler", int64_t{7}); },
       "its 'sampler' is the int 7, expected a dict"},
      {[&](auto& d) { child(d, "rng").insert_or_assign("cpu", 1.5); },
       "its 'rng.cpu' is the float 1.5, expected a list"},
      {[&](auto& d) {
         auto list = c10::impl::GenericList(c10::AnyType::get());
         list.push_back(torch::zeros({3}, torch::kUInt8));
         child(d, "rng").insert_or_assign("cpu", list);
       },
       "its 'rng.cpu.0' is not a CPU generator state"},
      {[&](auto& d) { child(d, "model").insert_or_assign("0.weight", std::string("w")); },
       "its 'model.0.weight' is the string 'w', expected a tensor"},
      {[&](auto& d) { child(d, "optimizer").erase("name"); },
       "has no 'optimizer.name' (expected a string)"},
      {[&](auto& d) { child(d, "optimizer").insert_or_assign("state", c10::IValue()); },
       "its 'optimizer.state' is None, expected a dict"},
      {[&](auto& d) {
         auto state = child(child(d, "optimizer"), "state");
         state.at(int64_t{0}).toGenericDict().erase("exp_avg_sq");
       },
       "has no 'optimizer.state.0.exp_avg_sq' (expected a tensor)"},
      {[&](auto& d) {
         auto state = child(child(d, "optimizer"), "state");
         state.at(int64_t{0}).toGenericDict().insert_or_assign("exp_avg", torch::zeros({2}));
       },
       "its 'optimizer.state.0.exp_avg' has shape [2], the parameter [8,4]"},
  };
  for (const auto& [edit, found] : cases) {
    const auto payload = edited(edit);
    auto restored = makeModel();
    auto restoredOptimizer = makeOptimizer(adam, restored->parameters());
    const auto message = errorOf([&] {
      restoreCheckpoint(payload, "ckpt/checkpoint-00000003.pt",
                        {*restored, *restoredOptimizer, adam}, 0, 1, torch::kCPU);
    });
    if (found.find("generator state") != std::string::npos) {
      EXPECT_EQ(message.rfind(prefix + found + " (", 0), 0u) << message;
    } else {
      EXPECT_EQ(message, prefix + found + hint);
    }
    EXPECT_EQ(message.find("frame #"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace ddp::train
