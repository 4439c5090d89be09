#include "models/model_zoo.h"

#include <gtest/gtest.h>

#include <limits>
#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "tests/support/fuzz.h"

namespace ddp::models {

// For gtest's messages (by argument-dependent lookup, hence in ModelSpec's namespace).
void PrintTo(const ModelSpec& spec, std::ostream* out) {
  *out << spec.name << " [" << fmt::format("{}", fmt::join(spec.sampleShape, ",")) << "] "
       << spec.numClasses;
}

namespace {

constexpr std::int64_t kBatch = 3;

// A batch of inputs the model takes: images/features N(0, 1), or tokens 0..V-1 for gpt.
torch::Tensor inputFor(const ModelSpec& spec, std::int64_t length = 0) {
  if (spec.name == "gpt") {
    return torch::randint(spec.numClasses, {kBatch, length > 0 ? length : spec.sampleShape[0]},
                          torch::kInt64);
  }
  std::vector<std::int64_t> shape{kBatch};
  shape.insert(shape.end(), spec.sampleShape.begin(), spec.sampleShape.end());
  return torch::randn(shape);
}

std::string specName(const ModelSpec& spec) {
  return fmt::format("{}_{}_{}", spec.name, fmt::join(spec.sampleShape, "x"), spec.numClasses);
}

class ModelShapeTest : public ::testing::TestWithParam<ModelSpec> {};

TEST_P(ModelShapeTest, GivesOneScorePerClass) {
  torch::manual_seed(0);
  const auto& spec = GetParam();
  auto model = createModel(spec);
  const auto output = model->forward(inputFor(spec));
  if (spec.name == "gpt") {
    EXPECT_EQ(output.sizes(),
              (std::vector<std::int64_t>{kBatch, spec.sampleShape[0], spec.numClasses}));
    // Shorter sequences than the block size work as well.
    EXPECT_EQ(model->forward(inputFor(spec, 5)).sizes(),
              (std::vector<std::int64_t>{kBatch, 5, spec.numClasses}));
  } else {
    EXPECT_EQ(output.sizes(), (std::vector<std::int64_t>{kBatch, spec.numClasses}));
  }
  EXPECT_TRUE(output.isfinite().all().item<bool>());
}

// Every parameter takes part in every step: DDP without find-unused-parameters needs it.
TEST_P(ModelShapeTest, EveryParameterGetsAGradient) {
  torch::manual_seed(0);
  const auto& spec = GetParam();
  auto model = createModel(spec);
  const auto logits = model->forward(inputFor(spec));
  const auto targets =
      torch::randint(spec.numClasses, logits.sizes().slice(0, logits.dim() - 1), torch::kInt64);
  torch::nn::functional::cross_entropy(logits.reshape({-1, spec.numClasses}), targets.reshape({-1}))
      .backward();
  for (const auto& parameter : model->named_parameters()) {
    const auto& grad = parameter.value().grad();
    ASSERT_TRUE(grad.defined()) << parameter.key();
    EXPECT_GT(grad.abs().sum().item<float>(), 0.0f) << parameter.key();
  }
}

INSTANTIATE_TEST_SUITE_P(
    EveryModel, ModelShapeTest,
    ::testing::Values(ModelSpec{"mlp", {1, 28, 28}, 10}, ModelSpec{"mlp", {4}, 3},
                      ModelSpec{"mlp", {3, 32, 32}, 10}, ModelSpec{"cnn", {1, 28, 28}, 10},
                      ModelSpec{"cnn", {3, 32, 32}, 10}, ModelSpec{"resnet", {1, 28, 28}, 10},
                      ModelSpec{"resnet", {3, 32, 32}, 100}, ModelSpec{"gpt", {16}, 30},
                      ModelSpec{"gpt", {8}, 93, 1, 2, 32}),
    [](const auto& info) { return specName(info.param); });

TEST(ModelZooTest, ParameterCountsAsComputedByHand) {
  // mlp: Linear(in, 256) + Linear(256, 128) + Linear(128, classes), weights and biases.
  const auto mlp = [](std::int64_t in, std::int64_t classes) {
    return in * 256 + 256 + 256 * 128 + 128 + 128 * classes + classes;
  };
  EXPECT_EQ(parameterCount(*createModel({"mlp", {1, 28, 28}, 10})), mlp(784, 10));
  EXPECT_EQ(mlp(784, 10), 235146);
  EXPECT_EQ(parameterCount(*createModel({"mlp", {4}, 3})), mlp(4, 3));
  // cnn: conv 5x5 C->32, conv 5x5 32->64, Linear(64 * H/4 * W/4, 128), Linear(128, classes).
  const auto cnn = [](std::int64_t c, std::int64_t h, std::int64_t w, std::int64_t classes) {
    return c * 32 * 25 + 32 + 32 * 64 * 25 + 64 + 64 * (h / 4) * (w / 4) * 128 + 128 +
           128 * classes + classes;
  };
  EXPECT_EQ(parameterCount(*createModel({"cnn", {1, 28, 28}, 10})), cnn(1, 28, 28, 10));
  EXPECT_EQ(cnn(1, 28, 28, 10), 454922);
  EXPECT_EQ(parameterCount(*createModel({"cnn", {3, 32, 32}, 10})), cnn(3, 32, 32, 10));
  // resnet: ResNet-14 with 1x1 shortcuts, as in models/resnet.h.
  EXPECT_EQ(parameterCount(*createModel({"resnet", {3, 32, 32}, 10})), 175258);
  // gpt: embeddings (V + T) * E; per block 2 LayerNorms (2 * 2E), attention E*3E + 3E and
  // E*E + E, mlp E*4E + 4E and 4E*E + E; head LayerNorm 2E and E*V + V.
  const std::int64_t v = 65, t = 64, e = 128, layers = 2;
  const std::int64_t block =
      4 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * 4 * e + 4 * e) + (4 * e * e + e);
  EXPECT_EQ(parameterCount(*createModel({"gpt", {t}, v})),
            (v + t) * e + layers * block + 2 * e + e * v + v);
}

TEST(ModelZooTest, GptIsCausal) {
  torch::manual_seed(0);
  auto model = createModel({"gpt", {16}, 30});
  torch::NoGradGuard noGrad;
  const auto tokens = torch::randint(30, {2, 16}, torch::kInt64);
  const auto logits = model->forward(tokens);  // [2, 16, 30]
  for (const std::int64_t t : {0, 6, 14}) {
    auto changed = tokens.clone();
    changed.select(1, t + 1).add_(1).remainder_(30);  // a different token at t + 1
    const auto changedLogits = model->forward(changed);
    // Positions 0..t cannot see position t + 1; position t + 1 does.
    EXPECT_TRUE(torch::allclose(logits.narrow(1, 0, t + 1), changedLogits.narrow(1, 0, t + 1),
                                /*rtol=*/0, /*atol=*/1e-6))
        << "t=" << t;
    EXPECT_FALSE(torch::allclose(logits.select(1, t + 1), changedLogits.select(1, t + 1)))
        << "t=" << t;
  }
}

TEST(ModelZooTest, GptRefusesSequencesLongerThanItsBlock) {
  auto model = createModel({"gpt", {8}, 10});
  try {
    model->forward(torch::zeros({1, 9}, torch::kInt64));
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected 1..8 tokens per sequence (the block size the "
                                         "model was built for), found 9"),
              std::string::npos)
        << e.what();
  }
}

void expectInvalid(const ModelSpec& spec, const std::string& expected) {
  try {
    createModel(spec);
    ADD_FAILURE() << specName(spec) << ": no error";
  } catch (const ModelSpecError& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
}

TEST(ModelZooTest, BadSpecsSayWhatIsWrong) {
  expectInvalid({"transformer", {16}, 10},
                "unknown model 'transformer': expected one of mlp, cnn, resnet, gpt");
  expectInvalid({"cnn", {4}, 3},
                "model 'cnn': expected image samples {C,H,W}, found sampleShape [4] (1 "
                "dimensions)");
  expectInvalid({"resnet", {30}, 3}, "model 'resnet': expected image samples {C,H,W}");
  expectInvalid({"cnn", {1, 2, 2}, 3}, "model 'cnn': expected H and W >= 4");
  expectInvalid({"mlp", {1, 0, 28}, 10},
                "model 'mlp': every size in sampleShape must be >= 1, found [1,0,28]");
  expectInvalid({"mlp", {}, 10}, "model 'mlp': expected a sampleShape, found none");
  expectInvalid({"mlp", {4}, 0}, "model 'mlp': numClasses must be >= 1, found 0");
  expectInvalid({"gpt", {0}, 65},
                "model 'gpt': the block size T = sampleShape[0] must be >= 1, found 0");
  expectInvalid({"gpt", {1, 28, 28}, 65}, "model 'gpt': expected token sequences");
  expectInvalid({"gpt", {64}, 65, 2, 4, 130},
                "model 'gpt': gptEmbedding 130 is not divisible by gptHeads 4");
  expectInvalid({"gpt", {64}, 65, 0}, "model 'gpt': gptLayers must be >= 1, found 0");
  expectInvalid({"gpt", {64}, 0}, "the vocabulary size (numClasses) must be >= 1, found 0");
}

// ddptrain takes --gpt-layers, --gpt-embedding and --block-size up to 2^63 - 1: the model
// then grew layer by layer until the machine's memory ran out (a pod: OOMKilled, then
// restarted). Above 2^32 parameters it is refused before anything is allocated. Each spec
// is built in a child under a 512 MiB limit (tests/support/fuzz.h judges what it throws).
TEST(ModelZooTest, GptsBeyondTheParameterBoundAreRefused) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  const std::vector<ModelSpec> specs = {{"gpt", {64}, 65, kMax, 4, 128},
                                        {"gpt", {64}, 65, 2, 1, std::int64_t{1} << 31},
                                        {"gpt", {std::int64_t{1} << 40}, 65, 2, 4, 128},
                                        {"gpt", {64}, std::int64_t{1} << 40, 2, 4, 128}};
  const std::string layersMessage =
      "model 'gpt': gptLayers 9223372036854775807, gptEmbedding 128, a vocabulary of 65 and a "
      "block of 64 make 1.8e+24 parameters; expected at most 4294967296 (16 GiB as float32). "
      "HINT: fewer layers (--gpt-layers) or a narrower embedding (--gpt-embedding)";
  const auto build = [&](const std::string& index) {
    try {
      createModel(specs[std::stoul(index)]);
    } catch (const ModelSpecError& e) {
      if (index == "0" && e.what() != layersMessage) throw std::logic_error(e.what());
      throw;
    }
  };
  const auto report = ddp::testing::fuzz::runEachOnce("gpt_size", {"0", "1", "2", "3"}, build,
                                                      "parameters; expected at most 4294967296",
                                                      std::size_t{512} << 20);
  EXPECT_EQ(report.rejected, 4) << report.describeFindings();
}

TEST(ModelZooTest, DescribeNamesTheLayoutAndTheParameterCount) {
  const ModelSpec resnet{"resnet", {3, 32, 32}, 10};
  EXPECT_EQ(describeModel(resnet, *createModel(resnet)),
            "resnet: input 3x32x32, 3x3 conv stem 16, 3 stages (16,32,64) x 2 BasicBlocks, "
            "10 classes, parameters=175258");
  const ModelSpec mlp{"mlp", {1, 28, 28}, 10};
  EXPECT_EQ(describeModel(mlp, *createModel(mlp)),
            "mlp: input 1x28x28, 784-256-128-10 with ReLU, parameters=235146");
  const ModelSpec gpt{"gpt", {64}, 65};
  const auto text = describeModel(gpt, *createModel(gpt));
  EXPECT_EQ(text.rfind("gpt: 2 layers, 4 heads, embedding 128, block 64, vocabulary 65, "
                       "parameters=",
                       0),
            0u)
      << text;
}

TEST(ModelZooTest, TheImageOverloadBuildsTheSameModel) {
  auto old = createModel("cnn", InputShape{}, 10);
  EXPECT_EQ(parameterCount(*old), parameterCount(*createModel({"cnn", {1, 28, 28}, 10})));
  EXPECT_THROW(createModel("nope", InputShape{}, 10), ModelSpecError);
}

}  // namespace
}  // namespace ddp::models
