// Models by name, for ddptrain and the benchmarks. Every model is a torch::nn::Sequential
// (what DistributedDataParallel and the trainer drive), built for one sample shape:
//
//   name    sample shape     input                 output
//   mlp     any              float32 [B, ...]      [B, classes]   flatten, 256-128 hidden, ReLU
//   cnn     {C, H, W}        float32 [B, C, H, W]  [B, classes]   LeNet-style, H, W >= 4
//   resnet  {C, H, W}        float32 [B, C, H, W]  [B, classes]   models/resnet.h
//   gpt     {T}              int64 [B, T'], T'<=T  [B, T', V]     models/gpt.h (V = numClasses)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/modules/container/sequential.h>

#include "runtime/error.h"

namespace ddp::models {

struct ModelSpec {
  std::string name;  // "mlp" | "cnn" | "resnet" | "gpt"
  // one input sample: {C,H,W} images, {F} tabular, {T} tokens (gpt)
  std::vector<std::int64_t> sampleShape;
  std::int64_t numClasses = 10;  // classes; for gpt: the vocabulary size
  // gpt only (defaults small enough to train on 2 CPU cores in a minute or two)
  std::int64_t gptLayers = 2;
  std::int64_t gptHeads = 4;
  std::int64_t gptEmbedding = 128;
};

// The names createModel() knows.
std::vector<std::string> modelNames();

// A model spec that cannot be built (permanent: see Note [Two error families]).
class ModelSpecError : public PermanentError {
 public:
  using PermanentError::PermanentError;
};

// Throws ModelSpecError for a spec that cannot be built, naming what is wrong: an
// unknown name (listing the known ones), a sample shape the model cannot take (cnn or
// resnet without {C,H,W}, gpt without {T}, a size < 1), numClasses < 1, gpt sizes < 1 or
// gptHeads not dividing gptEmbedding.
torch::nn::Sequential createModel(const ModelSpec& spec);

// One line for the log: the model's layout and its parameter count, e.g.
// "resnet: input 3x32x32, 3x3 conv stem 16, 3 stages (16,32,64) x 2 BasicBlocks, 10 classes,
// parameters=175258". Throws as createModel for an invalid spec.
std::string describeModel(const ModelSpec& spec, const torch::nn::Module& model);

// The image models' sample shape, for callers that predate ModelSpec.
struct InputShape {
  std::int64_t channels = 1;
  std::int64_t height = 28;
  std::int64_t width = 28;
};

// createModel({name, {channels, height, width}, numClasses}).
torch::nn::Sequential createModel(const std::string& name, const InputShape& input,
                                  std::int64_t numClasses);

std::int64_t parameterCount(const torch::nn::Module& model);

}  // namespace ddp::models
