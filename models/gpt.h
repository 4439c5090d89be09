// A small decoder-only transformer (GPT-2's layout at toy size) for char-level language
// modelling: tokens int64 [B, T] -> logits over the vocabulary [B, T, V], T <= blockSize.
//
//   GptEmbedding   token embedding [V, E] + learned position embedding [blockSize, E]
//   GptBlock x N   x = x + attention(layerNorm1(x));  x = x + mlp(layerNorm2(x))
//                  (pre-LayerNorm; causal multi-head self-attention; mlp E -> 4E -> E, GELU)
//   GptHead        final LayerNorm, linear E -> V
//
// Note [gpt as a Sequential]
// The model is a torch::nn::Sequential of these three module types, each a
// Tensor -> Tensor forward, because DistributedDataParallel and the trainer drive a
// Sequential. Every parameter takes part in every forward (the position rows beyond T
// get a zero gradient, but a gradient), so DDP needs no search for unused parameters.
#pragma once

#include <cstdint>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

namespace ddp::models {

struct GptConfig {
  std::int64_t vocabSize = 0;    // V
  std::int64_t blockSize = 0;    // the longest sequence T the model accepts
  std::int64_t layers = 2;       // N blocks
  std::int64_t heads = 4;        // attention heads; must divide embedding
  std::int64_t embedding = 128;  // E
};

class GptEmbeddingImpl : public torch::nn::Module {
 public:
  explicit GptEmbeddingImpl(const GptConfig& config);
  torch::Tensor forward(torch::Tensor tokens);  // int64 [B, T] -> [B, T, E]

 private:
  std::int64_t blockSize_;
  torch::nn::Embedding tokenEmbedding_{nullptr};
  torch::nn::Embedding positionEmbedding_{nullptr};
};
TORCH_MODULE(GptEmbedding);

class GptBlockImpl : public torch::nn::Module {
 public:
  explicit GptBlockImpl(const GptConfig& config);
  torch::Tensor forward(torch::Tensor x);  // [B, T, E] -> [B, T, E]

 private:
  std::int64_t heads_;
  torch::nn::LayerNorm layerNorm1_{nullptr};
  torch::nn::Linear attentionInput_{nullptr};   // E -> 3E: queries, keys, values
  torch::nn::Linear attentionOutput_{nullptr};  // E -> E
  torch::nn::LayerNorm layerNorm2_{nullptr};
  torch::nn::Linear mlpInput_{nullptr};   // E -> 4E
  torch::nn::Linear mlpOutput_{nullptr};  // 4E -> E
};
TORCH_MODULE(GptBlock);

class GptHeadImpl : public torch::nn::Module {
 public:
  explicit GptHeadImpl(const GptConfig& config);
  torch::Tensor forward(torch::Tensor x);  // [B, T, E] -> logits [B, T, V]

 private:
  torch::nn::LayerNorm layerNorm_{nullptr};
  torch::nn::Linear output_{nullptr};
};
TORCH_MODULE(GptHead);

// The model of Note [gpt as a Sequential], initialized as GPT-2: weights N(0, 0.02), the
// projections back into the residual stream N(0, 0.02 / sqrt(2 * layers)), biases 0.
// `config` must be valid (models::createModel checks a ModelSpec and says what is wrong).
torch::nn::Sequential createGpt(const GptConfig& config);

}  // namespace ddp::models
