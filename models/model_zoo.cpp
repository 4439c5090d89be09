#include "models/model_zoo.h"

#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

namespace ddp::models {
namespace nn = torch::nn;

std::vector<std::string> modelNames() { return {"mlp", "cnn"}; }

torch::nn::Sequential createModel(const std::string& name, const InputShape& input,
                                  std::int64_t numClasses) {
  const std::int64_t inputSize = input.channels * input.height * input.width;
  if (name == "mlp") {
    return nn::Sequential(nn::Flatten(), nn::Linear(inputSize, 256), nn::ReLU(),
                          nn::Linear(256, 128), nn::ReLU(), nn::Linear(128, numClasses));
  }
  if (name == "cnn") {
    // [B, C, H, W] -> conv 5x5 (pad 2) + pool -> [B, 32, H/2, W/2] -> [B, 64, H/4, W/4]
    const std::int64_t flat = 64 * (input.height / 4) * (input.width / 4);
    return nn::Sequential(
        nn::Conv2d(nn::Conv2dOptions(input.channels, 32, 5).padding(2)), nn::ReLU(),
        nn::MaxPool2d(2), nn::Conv2d(nn::Conv2dOptions(32, 64, 5).padding(2)), nn::ReLU(),
        nn::MaxPool2d(2), nn::Flatten(), nn::Linear(flat, 128), nn::ReLU(),
        nn::Linear(128, numClasses));
  }
  throw std::invalid_argument(
      fmt::format("unknown model '{}': expected one of {}", name, fmt::join(modelNames(), ", ")));
}

std::int64_t parameterCount(const torch::nn::Module& model) {
  std::int64_t count = 0;
  for (const auto& p : model.parameters()) count += p.numel();
  return count;
}

}  // namespace ddp::models
