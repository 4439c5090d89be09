// Models by name, for ddptrain and the benchmarks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/modules/container/sequential.h>

namespace ddp::models {

struct InputShape {
  std::int64_t channels = 1;
  std::int64_t height = 28;
  std::int64_t width = 28;
};

// The names createModel() knows.
std::vector<std::string> modelNames();

// "mlp": 784-256-128-10 with ReLU. "cnn": LeNet-style, two 5x5 conv + max-pool stages
// (32 and 64 channels), then 128 hidden units. Throws std::invalid_argument for an
// unknown name (listing the known ones).
torch::nn::Sequential createModel(const std::string& name, const InputShape& input,
                                  std::int64_t numClasses);

std::int64_t parameterCount(const torch::nn::Module& model);

}  // namespace ddp::models
