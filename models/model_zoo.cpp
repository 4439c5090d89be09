#include "models/model_zoo.h"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "models/gpt.h"
#include "models/resnet.h"

namespace ddp::models {
namespace nn = torch::nn;

namespace {

constexpr std::int64_t kMlpHidden1 = 256;
constexpr std::int64_t kMlpHidden2 = 128;
constexpr std::int64_t kCnnChannels1 = 32;
constexpr std::int64_t kCnnChannels2 = 64;
constexpr std::int64_t kCnnHidden = 128;
// The largest gpt the zoo builds (16 GiB of float32 weights, before gradients and the
// optimizer's state): a char-level model, far past any that trains here.
constexpr std::int64_t kMaxGptParameters = std::int64_t{1} << 32;

[[noreturn]] void reject(const ModelSpec& spec, const std::string& what) {
  throw ModelSpecError(fmt::format("model '{}': {}", spec.name, what));
}

std::string shapeText(const std::vector<std::int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ","));
}

void checkGpt(const ModelSpec& spec) {
  if (spec.sampleShape.size() != 1) {
    reject(spec, fmt::format("expected token sequences, sampleShape [T] with T the block size, "
                             "found {}. HINT: gpt trains on text data",
                             shapeText(spec.sampleShape)));
  }
  if (spec.sampleShape[0] < 1) {
    reject(spec, fmt::format("the block size T = sampleShape[0] must be >= 1, found {}",
                             spec.sampleShape[0]));
  }
  if (spec.numClasses < 1) {
    reject(spec,
           fmt::format("the vocabulary size (numClasses) must be >= 1, found {}", spec.numClasses));
  }
  for (const auto& [field, value] :
       {std::pair{"gptLayers", spec.gptLayers}, std::pair{"gptHeads", spec.gptHeads},
        std::pair{"gptEmbedding", spec.gptEmbedding}}) {
    if (value < 1) reject(spec, fmt::format("{} must be >= 1, found {}", field, value));
  }
  // Counted in double before anything is allocated: the model would otherwise grow layer by
  // layer until the machine's memory ran out (a pod: OOMKilled, restarted, again). The
  // layout is gpt.h's: embeddings (V + T) E, per block 12 E^2 + 13 E, head 2 E + E V + V.
  const double e = static_cast<double>(spec.gptEmbedding);
  const double vocabulary = static_cast<double>(spec.numClasses);
  const double parameters = (vocabulary + static_cast<double>(spec.sampleShape[0])) * e +
                            static_cast<double>(spec.gptLayers) * (12 * e * e + 13 * e) + 2 * e +
                            e * vocabulary + vocabulary;
  if (parameters > static_cast<double>(kMaxGptParameters)) {
    reject(spec,
           fmt::format("gptLayers {}, gptEmbedding {}, a vocabulary of {} and a block of {} "
                       "make {:.2g} parameters; expected at most {} ({} GiB as float32). "
                       "HINT: fewer layers (--gpt-layers) or a narrower embedding "
                       "(--gpt-embedding)",
                       spec.gptLayers, spec.gptEmbedding, spec.numClasses, spec.sampleShape[0],
                       parameters, kMaxGptParameters, kMaxGptParameters * 4 >> 30));
  }
  if (spec.gptEmbedding % spec.gptHeads != 0) {
    reject(spec, fmt::format("gptEmbedding {} is not divisible by gptHeads {} (every head gets "
                             "gptEmbedding / gptHeads channels)",
                             spec.gptEmbedding, spec.gptHeads));
  }
}

void checkSpec(const ModelSpec& spec) {
  const auto names = modelNames();
  if (std::find(names.begin(), names.end(), spec.name) == names.end()) {
    throw ModelSpecError(
        fmt::format("unknown model '{}': expected one of {}", spec.name, fmt::join(names, ", ")));
  }
  if (spec.name == "gpt") return checkGpt(spec);
  if (spec.numClasses < 1) {
    reject(spec, fmt::format("numClasses must be >= 1, found {}", spec.numClasses));
  }
  const bool image = spec.name == "cnn" || spec.name == "resnet";
  if (image && spec.sampleShape.size() != 3) {
    reject(spec, fmt::format("expected image samples {{C,H,W}}, found sampleShape {} ({} "
                             "dimensions). HINT: 'mlp' takes samples of any shape",
                             shapeText(spec.sampleShape), spec.sampleShape.size()));
  }
  if (spec.sampleShape.empty()) reject(spec, "expected a sampleShape, found none");
  for (const auto size : spec.sampleShape) {
    if (size < 1) {
      reject(spec, fmt::format("every size in sampleShape must be >= 1, found {}",
                               shapeText(spec.sampleShape)));
    }
  }
  if (spec.name == "cnn" && (spec.sampleShape[1] < 4 || spec.sampleShape[2] < 4)) {
    reject(spec, fmt::format("expected H and W >= 4 (two 2x2 max-pools), found {}",
                             shapeText(spec.sampleShape)));
  }
}

std::int64_t product(const std::vector<std::int64_t>& shape) {
  std::int64_t result = 1;
  for (const auto size : shape) result *= size;
  return result;
}

}  // namespace

std::vector<std::string> modelNames() { return {"mlp", "cnn", "resnet", "gpt"}; }

torch::nn::Sequential createModel(const ModelSpec& spec) {
  checkSpec(spec);
  const auto& shape = spec.sampleShape;
  if (spec.name == "mlp") {
    return nn::Sequential(nn::Flatten(), nn::Linear(product(shape), kMlpHidden1), nn::ReLU(),
                          nn::Linear(kMlpHidden1, kMlpHidden2), nn::ReLU(),
                          nn::Linear(kMlpHidden2, spec.numClasses));
  }
  if (spec.name == "cnn") {
    // [B, C, H, W] -> conv 5x5 (pad 2) + pool -> [B, 32, H/2, W/2] -> [B, 64, H/4, W/4]
    const std::int64_t flat = kCnnChannels2 * (shape[1] / 4) * (shape[2] / 4);
    return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(shape[0], kCnnChannels1, 5).padding(2)),
                          nn::ReLU(), nn::MaxPool2d(2),
                          nn::Conv2d(nn::Conv2dOptions(kCnnChannels1, kCnnChannels2, 5).padding(2)),
                          nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(), nn::Linear(flat, kCnnHidden),
                          nn::ReLU(), nn::Linear(kCnnHidden, spec.numClasses));
  }
  if (spec.name == "resnet") return createResNet(shape[0], spec.numClasses);
  return createGpt(
      GptConfig{spec.numClasses, shape[0], spec.gptLayers, spec.gptHeads, spec.gptEmbedding});
}

std::string describeModel(const ModelSpec& spec, const torch::nn::Module& model) {
  checkSpec(spec);
  const auto parameters = parameterCount(model);
  const auto input = fmt::format("{}", fmt::join(spec.sampleShape, "x"));
  if (spec.name == "mlp") {
    return fmt::format("mlp: input {}, {}-{}-{}-{} with ReLU, parameters={}", input,
                       product(spec.sampleShape), kMlpHidden1, kMlpHidden2, spec.numClasses,
                       parameters);
  }
  if (spec.name == "cnn") {
    return fmt::format(
        "cnn: input {}, 5x5 conv {} + 2x2 max-pool, 5x5 conv {} + 2x2 max-pool, "
        "{} hidden, {} classes, parameters={}",
        input, kCnnChannels1, kCnnChannels2, kCnnHidden, spec.numClasses, parameters);
  }
  if (spec.name == "resnet") {
    return fmt::format(
        "resnet: input {}, 3x3 conv stem {}, {} stages ({}) x {} BasicBlocks, "
        "{} classes, parameters={}",
        input, kResNetStageChannels[0], kResNetStageChannels.size(),
        fmt::join(kResNetStageChannels, ","), kResNetBlocksPerStage, spec.numClasses, parameters);
  }
  return fmt::format(
      "gpt: {} layers, {} heads, embedding {}, block {}, vocabulary {}, "
      "parameters={}",
      spec.gptLayers, spec.gptHeads, spec.gptEmbedding, spec.sampleShape[0], spec.numClasses,
      parameters);
}

torch::nn::Sequential createModel(const std::string& name, const InputShape& input,
                                  std::int64_t numClasses) {
  return createModel(ModelSpec{name, {input.channels, input.height, input.width}, numClasses});
}

std::int64_t parameterCount(const torch::nn::Module& model) {
  std::int64_t count = 0;
  for (const auto& p : model.parameters()) count += p.numel();
  return count;
}

}  // namespace ddp::models
