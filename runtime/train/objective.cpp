#include "runtime/train/objective.h"

#include <torch/torch.h>

namespace ddp::train {
namespace {

namespace F = torch::nn::functional;

// [N, C] or [N, T, C] -> [N*T, C]; targets [N] or [N, T] -> [N*T].
std::pair<at::Tensor, at::Tensor> flatten(const at::Tensor& logits, const at::Tensor& targets) {
  return {logits.reshape({-1, logits.size(-1)}), targets.reshape({-1})};
}

}  // namespace

Objective classification() {
  Objective objective;
  objective.loss = [](const at::Tensor& output, const at::Tensor& target) {
    auto [logits, classes] = flatten(output, target);
    return F::cross_entropy(logits, classes);
  };
  objective.metrics.push_back({"accuracy", [](const at::Tensor& output, const at::Tensor& target) {
                                 auto [logits, classes] = flatten(output, target);
                                 return logits.argmax(1).eq(classes).sum();
                               }});
  return objective;
}

Objective regression() {
  Objective objective;
  objective.loss = [](const at::Tensor& output, const at::Tensor& target) {
    return F::mse_loss(output, target.to(output.dtype()));
  };
  objective.metrics.push_back({"mse", [](const at::Tensor& output, const at::Tensor& target) {
                                 return (output - target.to(output.dtype())).pow(2).sum();
                               }});
  return objective;
}

}  // namespace ddp::train
