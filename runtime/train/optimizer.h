// The optimizer a run steps with and the learning rate of each step: what ddptrain's
// --optimizer and --lr-schedule choose, for any module's parameters.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>

namespace ddp::train {

struct OptimizerOptions {
  std::string name = "sgd";  // sgd | adam | adamw
  double lr = 0.05;
  double momentum = 0.9;  // sgd
  double weightDecay = 0.0;
  double beta1 = 0.9;  // adam, adamw
  double beta2 = 0.999;
  double eps = 1e-8;
};

struct ScheduleOptions {
  std::string name = "constant";  // constant | cosine | step
  std::int64_t warmupSteps = 0;   // linear warm-up from lr/warmupSteps to lr
  double minLrRatio = 0.0;        // cosine: the floor, as a fraction of lr
  std::int64_t stepSize = 1000;   // step: decay every stepSize steps after warm-up
  double gamma = 0.1;             // step: the factor per decay
};

// torch::optim::SGD (with momentum), Adam or AdamW over `params`; ConfigError for another
// name.
std::unique_ptr<torch::optim::Optimizer> makeOptimizer(const OptimizerOptions& options,
                                                       std::vector<at::Tensor> params);

// ConfigError for a schedule that cannot work (unknown name, stepSize < 1).
void checkSchedule(const ScheduleOptions& schedule);

// The learning rate for optimizer step `step` (0-based) of `totalSteps`.
double learningRate(const ScheduleOptions& schedule, double baseLr, std::int64_t step,
                    std::int64_t totalSteps);

void setLearningRate(torch::optim::Optimizer& optimizer, double lr);

}  // namespace ddp::train
