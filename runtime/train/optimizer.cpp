#include "runtime/train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include <fmt/format.h>
#include <torch/torch.h>

#include "runtime/error.h"

namespace ddp::train {

std::unique_ptr<torch::optim::Optimizer> makeOptimizer(const OptimizerOptions& o,
                                                       std::vector<at::Tensor> params) {
  if (o.name == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weightDecay));
  }
  if (o.name == "adam") {
    return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(o.lr)
                                                            .betas({o.beta1, o.beta2})
                                                            .eps(o.eps)
                                                            .weight_decay(o.weightDecay));
  }
  if (o.name == "adamw") {
    return std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(o.lr)
                                                             .betas({o.beta1, o.beta2})
                                                             .eps(o.eps)
                                                             .weight_decay(o.weightDecay));
  }
  throw ConfigError(fmt::format("optimizer '{}': expected sgd, adam or adamw", o.name));
}

void checkSchedule(const ScheduleOptions& schedule) {
  if (schedule.name != "constant" && schedule.name != "cosine" && schedule.name != "step") {
    throw ConfigError(
        fmt::format("lr schedule '{}': expected constant, cosine or step", schedule.name));
  }
  if (schedule.name == "step" && schedule.stepSize < 1) {
    throw ConfigError("lr-step-size must be >= 1");
  }
}

double learningRate(const ScheduleOptions& schedule, double baseLr, std::int64_t step,
                    std::int64_t totalSteps) {
  if (step < schedule.warmupSteps) {
    return baseLr * static_cast<double>(step + 1) / static_cast<double>(schedule.warmupSteps);
  }
  const auto sinceWarmup = step - schedule.warmupSteps;
  if (schedule.name == "cosine") {
    const auto span = std::max<std::int64_t>(1, totalSteps - schedule.warmupSteps);
    const double progress = std::min(1.0, static_cast<double>(sinceWarmup) / span);
    const double floor = baseLr * schedule.minLrRatio;
    return floor + 0.5 * (baseLr - floor) * (1.0 + std::cos(std::numbers::pi * progress));
  }
  if (schedule.name == "step") {
    return baseLr * std::pow(schedule.gamma, static_cast<double>(sinceWarmup / schedule.stepSize));
  }
  return baseLr;
}

void setLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace ddp::train
