#include "models/gpt.h"

#include <cmath>
#include <string>

#include <torch/torch.h>

namespace ddp::models {
namespace nn = torch::nn;

namespace {

constexpr double kInitStd = 0.02;  // GPT-2's

void initLinear(nn::Linear& linear, double std) {
  nn::init::normal_(linear->weight, 0.0, std);
  nn::init::zeros_(linear->bias);
}

}  // namespace

GptEmbeddingImpl::GptEmbeddingImpl(const GptConfig& config)
    : blockSize_(config.blockSize),
      tokenEmbedding_(register_module("token", nn::Embedding(config.vocabSize, config.embedding))),
      positionEmbedding_(
          register_module("position", nn::Embedding(config.blockSize, config.embedding))) {
  nn::init::normal_(tokenEmbedding_->weight, 0.0, kInitStd);
  nn::init::normal_(positionEmbedding_->weight, 0.0, kInitStd);
}

torch::Tensor GptEmbeddingImpl::forward(torch::Tensor tokens) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.scalar_type() == torch::kInt64,
              "gpt: expected int64 tokens [B, T], found ", tokens.scalar_type(), " ",
              tokens.sizes());
  const auto length = tokens.size(1);
  TORCH_CHECK(length >= 1 && length <= blockSize_, "gpt: expected 1..", blockSize_,
              " tokens per sequence (the block size the model was built for), found ", length);
  // [B, T, E] + [T, E]: one position vector per place in the sequence.
  return tokenEmbedding_(tokens) + positionEmbedding_->weight.narrow(0, 0, length);
}

GptBlockImpl::GptBlockImpl(const GptConfig& config)
    : heads_(config.heads),
      layerNorm1_(
          register_module("layer_norm1", nn::LayerNorm(nn::LayerNormOptions({config.embedding})))),
      attentionInput_(
          register_module("attention_input", nn::Linear(config.embedding, 3 * config.embedding))),
      attentionOutput_(
          register_module("attention_output", nn::Linear(config.embedding, config.embedding))),
      layerNorm2_(
          register_module("layer_norm2", nn::LayerNorm(nn::LayerNormOptions({config.embedding})))),
      mlpInput_(register_module("mlp_input", nn::Linear(config.embedding, 4 * config.embedding))),
      mlpOutput_(
          register_module("mlp_output", nn::Linear(4 * config.embedding, config.embedding))) {
  TORCH_CHECK(config.embedding % config.heads == 0, "gpt: embedding ", config.embedding,
              " is not divisible by heads ", config.heads);
  // The two projections that add into the residual stream get a smaller init, so the
  // stream's variance does not grow with depth (GPT-2, section 2.3).
  const double residualStd = kInitStd / std::sqrt(2.0 * static_cast<double>(config.layers));
  initLinear(attentionInput_, kInitStd);
  initLinear(attentionOutput_, residualStd);
  initLinear(mlpInput_, kInitStd);
  initLinear(mlpOutput_, residualStd);
}

torch::Tensor GptBlockImpl::forward(torch::Tensor x) {
  const auto batch = x.size(0);
  const auto length = x.size(1);
  const auto embedding = x.size(2);
  // [B, T, E] -> [B, H, T, E/H]
  const auto toHeads = [&](const torch::Tensor& t) {
    return t.view({batch, length, heads_, embedding / heads_}).transpose(1, 2);
  };
  const auto qkv = attentionInput_(layerNorm1_(x)).chunk(3, /*dim=*/-1);
  // is_causal applies the causal mask: position t attends to positions 0..t only, so the
  // logits at t never see the characters they are trained to predict.
  auto attended = at::scaled_dot_product_attention(toHeads(qkv[0]), toHeads(qkv[1]),
                                                   toHeads(qkv[2]), /*attn_mask=*/{},
                                                   /*dropout_p=*/0.0, /*is_causal=*/true);
  attended = attended.transpose(1, 2).reshape({batch, length, embedding});  // [B, T, E]
  x = x + attentionOutput_(attended);
  return x + mlpOutput_(torch::gelu(mlpInput_(layerNorm2_(x))));
}

GptHeadImpl::GptHeadImpl(const GptConfig& config)
    : layerNorm_(
          register_module("layer_norm", nn::LayerNorm(nn::LayerNormOptions({config.embedding})))),
      output_(register_module("output", nn::Linear(config.embedding, config.vocabSize))) {
  initLinear(output_, kInitStd);
}

torch::Tensor GptHeadImpl::forward(torch::Tensor x) { return output_(layerNorm_(x)); }

torch::nn::Sequential createGpt(const GptConfig& config) {
  nn::Sequential model;
  model->push_back("embedding", GptEmbedding(config));
  for (std::int64_t i = 0; i < config.layers; ++i) {
    model->push_back("block" + std::to_string(i), GptBlock(config));
  }
  model->push_back("head", GptHead(config));
  return model;
}

}  // namespace ddp::models
