// ddp::train::learningRate, the schedule of runtime/train/optimizer.cpp: constant, linear
// warm-up (lr/warmupSteps at step 0 up to lr), cosine from lr down to minLrRatio x lr,
// and step decay by gamma every stepSize steps after the warm-up. Exact values.
#include "runtime/train/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>

namespace ddp::train {
namespace {

ScheduleOptions schedule(std::string name, std::int64_t warmupSteps = 0) {
  ScheduleOptions s;
  s.name = std::move(name);
  s.warmupSteps = warmupSteps;
  return s;
}

TEST(LearningRateTest, ConstantIsTheBaseRateAtEveryStep) {
  const auto constant = schedule("constant");
  for (std::int64_t step : {0, 1, 99, 100, 5000}) {
    EXPECT_DOUBLE_EQ(learningRate(constant, 0.05, step, 100), 0.05) << "step " << step;
  }
}

TEST(LearningRateTest, WarmupRisesLinearlyFromLrOverWarmupToLr) {
  // lr 2, 4 warm-up steps: 2/4, 2*2/4, 2*3/4, 2, then the schedule (exact in binary).
  for (const char* name : {"constant", "cosine", "step"}) {
    auto s = schedule(name, 4);
    EXPECT_DOUBLE_EQ(learningRate(s, 2.0, 0, 1000), 0.5) << name;
    EXPECT_DOUBLE_EQ(learningRate(s, 2.0, 1, 1000), 1.0) << name;
    EXPECT_DOUBLE_EQ(learningRate(s, 2.0, 2, 1000), 1.5) << name;
    EXPECT_DOUBLE_EQ(learningRate(s, 2.0, 3, 1000), 2.0) << name;
    EXPECT_DOUBLE_EQ(learningRate(s, 2.0, 4, 1000), 2.0) << name << ": first step after warm-up";
  }
  // A warm-up of one step is no warm-up.
  EXPECT_DOUBLE_EQ(learningRate(schedule("constant", 1), 0.3, 0, 10), 0.3);
}

TEST(LearningRateTest, CosineFallsFromLrToTheFloorThroughTheMidpoint) {
  auto cosine = schedule("cosine", 10);
  cosine.minLrRatio = 0.1;
  const double lr = 1.0, floor = 0.1;
  const std::int64_t total = 110;  // 100 steps of cosine after 10 of warm-up
  EXPECT_DOUBLE_EQ(learningRate(cosine, lr, 10, total), lr) << "starts at lr after warm-up";
  EXPECT_NEAR(learningRate(cosine, lr, 60, total), (lr + floor) / 2, 1e-15) << "halfway";
  EXPECT_NEAR(learningRate(cosine, lr, 35, total),
              floor + 0.5 * (lr - floor) * (1 + std::cos(std::numbers::pi / 4)), 1e-15)
      << "a quarter of the way";
  EXPECT_DOUBLE_EQ(learningRate(cosine, lr, total, total), floor) << "ends at minLrRatio x lr";
  EXPECT_DOUBLE_EQ(learningRate(cosine, lr, total + 50, total), floor) << "stays there";
  // Strictly decreasing from the end of warm-up to the end.
  for (std::int64_t step = 11; step <= total; ++step) {
    EXPECT_LT(learningRate(cosine, lr, step, total), learningRate(cosine, lr, step - 1, total))
        << "step " << step;
  }
  // Symmetric about the midpoint: lr(60 - k) - mid == mid - lr(60 + k).
  for (std::int64_t k = 1; k <= 50; ++k) {
    EXPECT_NEAR(learningRate(cosine, lr, 60 - k, total) - 0.55,
                0.55 - learningRate(cosine, lr, 60 + k, total), 1e-15)
        << "k " << k;
  }
}

TEST(LearningRateTest, CosineWithoutFloorEndsAtZero) {
  const auto cosine = schedule("cosine");
  EXPECT_DOUBLE_EQ(learningRate(cosine, 0.4, 0, 8), 0.4);
  EXPECT_NEAR(learningRate(cosine, 0.4, 4, 8), 0.2, 1e-16);
  EXPECT_NEAR(learningRate(cosine, 0.4, 8, 8), 0.0, 1e-16);
}

TEST(LearningRateTest, StepDecaysByGammaEveryStepSizeAfterWarmup) {
  auto step = schedule("step", 5);
  step.stepSize = 10;
  step.gamma = 0.5;
  EXPECT_DOUBLE_EQ(learningRate(step, 1.0, 0, 1000), 0.2) << "warm-up";
  EXPECT_DOUBLE_EQ(learningRate(step, 1.0, 4, 1000), 1.0) << "end of warm-up";
  EXPECT_DOUBLE_EQ(learningRate(step, 1.0, 5, 1000), 1.0);
  EXPECT_DOUBLE_EQ(learningRate(step, 1.0, 14, 1000), 1.0) << "last step before the decay";
  EXPECT_DOUBLE_EQ(learningRate(step, 1.0, 15, 1000), 0.5) << "first decay";
  EXPECT_DOUBLE_EQ(learningRate(step, 1.0, 24, 1000), 0.5);
  EXPECT_DOUBLE_EQ(learningRate(step, 1.0, 25, 1000), 0.25) << "second decay";
  EXPECT_DOUBLE_EQ(learningRate(step, 1.0, 105, 1000), std::pow(0.5, 10)) << "tenth decay";

  auto defaults = schedule("step");  // stepSize 1000, gamma 0.1, no warm-up
  EXPECT_DOUBLE_EQ(learningRate(defaults, 0.05, 999, 5000), 0.05);
  EXPECT_DOUBLE_EQ(learningRate(defaults, 0.05, 1000, 5000), 0.05 * 0.1);
  EXPECT_DOUBLE_EQ(learningRate(defaults, 0.05, 2000, 5000), 0.05 * 0.1 * 0.1);
}

}  // namespace
}  // namespace ddp::train
