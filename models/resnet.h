// A small ResNet for 28x28 and 32x32 images, CIFAR-style (He et al. 2015, section 4.2,
// with 1x1-convolution shortcuts): images float32 [B, C, H, W] -> logits [B, classes].
//
//   stem      3x3 conv C -> 16, BatchNorm, ReLU                      [B, 16, H, W]
//   stage 1   kResNetBlocksPerStage BasicBlocks, 16 channels          [B, 16, H, W]
//   stage 2   the same, 32 channels, the first block with stride 2    [B, 32, H/2, W/2]
//   stage 3   the same, 64 channels, stride 2                         [B, 64, H/4, W/4]
//   head      global average pool, linear 64 -> classes
// With 2 blocks per stage (ResNet-14) that is 175,258 parameters for 10 classes, small
// enough to train on two CPU cores.
#pragma once

#include <array>
#include <cstdint>

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

namespace ddp::models {

constexpr std::array<std::int64_t, 3> kResNetStageChannels = {16, 32, 64};
constexpr std::int64_t kResNetBlocksPerStage = 2;

// out = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x, stride))))) + shortcut(x)); the shortcut is
// the identity, or a strided 1x1 conv + BN where the block changes the shape.
class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(std::int64_t inChannels, std::int64_t outChannels, std::int64_t stride);
  torch::Tensor forward(torch::Tensor x);  // [B, in, H, W] -> [B, out, H/stride, W/stride]

 private:
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d batchNorm1_{nullptr};
  torch::nn::Conv2d conv2_{nullptr};
  torch::nn::BatchNorm2d batchNorm2_{nullptr};
  torch::nn::Sequential shortcut_{nullptr};  // empty for the identity
};
TORCH_MODULE(BasicBlock);

torch::nn::Sequential createResNet(std::int64_t inChannels, std::int64_t numClasses);

}  // namespace ddp::models
