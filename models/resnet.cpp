#include "models/resnet.h"

#include <string>

#include <fmt/format.h>
#include <torch/torch.h>

namespace ddp::models {
namespace nn = torch::nn;

namespace {

// Convolutions before a BatchNorm need no bias: the BatchNorm's shift replaces it.
nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride) {
  return nn::Conv2d(
      nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

}  // namespace

BasicBlockImpl::BasicBlockImpl(std::int64_t inChannels, std::int64_t outChannels,
                               std::int64_t stride)
    : conv1_(register_module("conv1", conv(inChannels, outChannels, 3, stride))),
      batchNorm1_(register_module("batch_norm1", nn::BatchNorm2d(outChannels))),
      conv2_(register_module("conv2", conv(outChannels, outChannels, 3, 1))),
      batchNorm2_(register_module("batch_norm2", nn::BatchNorm2d(outChannels))) {
  if (stride != 1 || inChannels != outChannels) {
    shortcut_ = register_module("shortcut", nn::Sequential(conv(inChannels, outChannels, 1, stride),
                                                           nn::BatchNorm2d(outChannels)));
  }
}

torch::Tensor BasicBlockImpl::forward(torch::Tensor x) {
  auto out = torch::relu(batchNorm1_(conv1_(x)));
  out = batchNorm2_(conv2_(out));
  return torch::relu(out + (shortcut_.is_empty() ? x : shortcut_->forward(x)));
}

torch::nn::Sequential createResNet(std::int64_t inChannels, std::int64_t numClasses) {
  nn::Sequential model;
  model->push_back("stem", conv(inChannels, kResNetStageChannels[0], 3, 1));
  model->push_back("stem_batch_norm", nn::BatchNorm2d(kResNetStageChannels[0]));
  model->push_back("stem_relu", nn::ReLU());
  std::int64_t channels = kResNetStageChannels[0];
  for (std::size_t stage = 0; stage < kResNetStageChannels.size(); ++stage) {
    for (std::int64_t block = 0; block < kResNetBlocksPerStage; ++block) {
      // The first block of every stage but the first halves H and W.
      const std::int64_t stride = (stage > 0 && block == 0) ? 2 : 1;
      model->push_back(fmt::format("stage{}_block{}", stage + 1, block + 1),
                       BasicBlock(channels, kResNetStageChannels[stage], stride));
      channels = kResNetStageChannels[stage];
    }
  }
  model->push_back("pool", nn::AdaptiveAvgPool2d(1));  // [B, 64, h, w] -> [B, 64, 1, 1]
  model->push_back("flatten", nn::Flatten());
  model->push_back("classifier", nn::Linear(channels, numClasses));
  return model;
}

}  // namespace ddp::models
