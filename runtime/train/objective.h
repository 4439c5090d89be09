// What a Trainer minimizes and reports: a loss, and the metrics of an evaluation.
//
// Both see the model's output and the batch's targets as they are. The loss returns the
// mean over the batch (what backward() starts from); a metric returns the sum over the
// batch's targets, and an evaluation divides by the number of targets it saw over all
// ranks (target.numel() summed), so metrics of any batch and world size average alike.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ddp::train {

using LossFn = std::function<at::Tensor(const at::Tensor& output, const at::Tensor& target)>;
using MetricFn = std::function<at::Tensor(const at::Tensor& output, const at::Tensor& target)>;

struct Metric {
  std::string name;  // the key of EvalMetrics::values and of the metrics file
  MetricFn sum;      // a scalar: the sum over the batch's targets
};

struct Objective {
  LossFn loss;
  std::vector<Metric> metrics;
};

// Cross entropy of logits [N, C] or [N, T, C] against class indices [N] or [N, T], and
// "accuracy", the share of targets whose largest logit is the right class. ddptrain's.
Objective classification();

// Mean squared error against targets of the output's shape, and "mse" as a metric.
Objective regression();

}  // namespace ddp::train
