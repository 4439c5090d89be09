#include "runtime/train/train_config.h"

#include <charconv>
#include <cmath>
#include <functional>
#include <sstream>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

namespace ddp::train {
namespace {

// A value and where it came from, for parsers and their errors.
struct Setting {
  const std::string& key;
  const std::string& value;
  const std::string& source;

  [[noreturn]] void fail(const std::string& expected) const {
    throw ConfigError(fmt::format("{}: expected {}, found '{}' (from {}). Run 'ddptrain --help' "
                                  "for every option.",
                                  key, expected, value, source));
  }
  std::int64_t integer(std::int64_t min) const {
    std::int64_t out = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
    if (ec != std::errc() || end != value.data() + value.size() || out < min) {
      fail(fmt::format("an integer >= {}", min));
    }
    return out;
  }
  std::uint64_t unsignedInteger() const {
    std::uint64_t out = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
    if (ec != std::errc() || end != value.data() + value.size()) fail("an integer >= 0");
    return out;
  }
  double number(double min, bool inclusive = true) const {
    double out = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
    if (ec != std::errc() || end != value.data() + value.size() || !std::isfinite(out) ||
        out < min || (!inclusive && out == min)) {
      fail(fmt::format("a number {} {}", inclusive ? ">=" : ">", min));
    }
    return out;
  }
  double fraction() const {
    const double out = number(0.0, false);
    if (out >= 1.0) fail("a number in (0, 1)");
    return out;
  }
  bool boolean() const {
    if (value == "true" || value == "1" || value == "yes" || value == "on") return true;
    if (value == "false" || value == "0" || value == "no" || value == "off") return false;
    fail("true or false");
  }
  std::string choice(std::initializer_list<const char*> choices) const {
    std::string list;
    for (const char* c : choices) {
      if (value == c) return value;
      list += (list.empty() ? "" : ", ") + std::string(c);
    }
    fail("one of " + list);
  }
  std::string text() const { return value; }
};

struct Option {
  std::string key;
  std::string defaultValue;
  std::string help;
  std::function<void(TrainConfig&, const Setting&)> apply;
  bool isFlag = false;  // a boolean: `--key` alone means true
};

std::chrono::milliseconds secondsOrUnset(const Setting& s, std::optional<std::chrono::milliseconds>& out) {
  const auto seconds = s.integer(0);
  out = seconds == 0 ? std::nullopt : std::optional(std::chrono::milliseconds(seconds * 1000));
  return out.value_or(std::chrono::milliseconds(0));
}

// The one table of options: key, default, help, how to apply a value.
const std::vector<Option>& options() {
  using C = TrainConfig;
  using S = Setting;
  static const std::vector<Option> table = {
      // model
      {"model", "cnn", "model: mlp, cnn, resnet or gpt",
       [](C& c, const S& s) { c.model = s.choice({"mlp", "cnn", "resnet", "gpt"}); }},
      {"gpt-layers", "2", "gpt: transformer blocks",
       [](C& c, const S& s) { c.gptLayers = s.integer(1); }},
      {"gpt-heads", "4", "gpt: attention heads (must divide gpt-embedding)",
       [](C& c, const S& s) { c.gptHeads = s.integer(1); }},
      {"gpt-embedding", "128", "gpt: embedding width",
       [](C& c, const S& s) { c.gptEmbedding = s.integer(1); }},
      // data
      {"data", "idx", "data set kind: idx (MNIST-format directory), csv, text or synthetic",
       [](C& c, const S& s) { c.data = s.choice({"idx", "csv", "text", "synthetic"}); }},
      {"data-path", "/usr/share/datasets/fashion-mnist",
       "idx: directory with train-*/t10k-* files; csv, text: the file (.gz or plain)",
       [](C& c, const S& s) { c.dataPath = s.text(); }},
      {"data-dir", "/usr/share/datasets/fashion-mnist", "the same as data-path (the name "
       "MNIST users know)",
       [](C& c, const S& s) { c.dataPath = s.text(); }},
      {"test-fraction", "0.2", "csv, text: share held out for evaluation, in (0, 1)",
       [](C& c, const S& s) { c.testFraction = s.fraction(); }},
      {"block-size", "64", "text: characters per sample",
       [](C& c, const S& s) { c.blockSize = s.integer(1); }},
      {"synthetic-samples", "4096", "synthetic: training samples",
       [](C& c, const S& s) { c.syntheticSamples = s.integer(1); }},
      // schedule of the run
      {"epochs", "2", "passes over the training set",
       [](C& c, const S& s) { c.trainer.epochs = static_cast<int>(s.integer(1)); }},
      {"max-steps", "0", "stop after this many optimizer steps instead (0: by epochs)",
       [](C& c, const S& s) { c.trainer.maxSteps = s.integer(0); }},
      {"batch-size", "64", "samples per rank per micro-batch",
       [](C& c, const S& s) { c.trainer.batchSize = s.integer(1); }},
      {"grad-accumulation", "1", "micro-batches per optimizer step (all but the last without "
       "gradient communication)",
       [](C& c, const S& s) { c.trainer.gradAccumulation = static_cast<int>(s.integer(1)); }},
      // optimizer
      {"optimizer", "sgd", "sgd (with momentum), adam or adamw",
       [](C& c, const S& s) { c.trainer.optimizer.name = s.choice({"sgd", "adam", "adamw"}); }},
      {"lr", "0.05", "peak learning rate",
       [](C& c, const S& s) { c.trainer.optimizer.lr = s.number(0, false); }},
      {"momentum", "0.9", "sgd momentum",
       [](C& c, const S& s) { c.trainer.optimizer.momentum = s.number(0); }},
      {"weight-decay", "0", "L2 penalty (sgd, adam) or decoupled decay (adamw)",
       [](C& c, const S& s) { c.trainer.optimizer.weightDecay = s.number(0); }},
      {"beta1", "0.9", "adam, adamw: first moment decay",
       [](C& c, const S& s) { c.trainer.optimizer.beta1 = s.fraction(); }},
      {"beta2", "0.999", "adam, adamw: second moment decay",
       [](C& c, const S& s) { c.trainer.optimizer.beta2 = s.fraction(); }},
      {"lr-schedule", "constant", "constant, cosine (to min-lr-ratio x lr) or step (x lr-gamma "
       "every lr-step-size steps)",
       [](C& c, const S& s) { c.trainer.schedule.name = s.choice({"constant", "cosine", "step"}); }},
      {"warmup-steps", "0", "linear warm-up steps before the schedule",
       [](C& c, const S& s) { c.trainer.schedule.warmupSteps = s.integer(0); }},
      {"min-lr-ratio", "0", "cosine: the final learning rate as a fraction of lr",
       [](C& c, const S& s) { c.trainer.schedule.minLrRatio = s.number(0); }},
      {"lr-step-size", "1000", "step: steps between decays",
       [](C& c, const S& s) { c.trainer.schedule.stepSize = s.integer(1); }},
      {"lr-gamma", "0.1", "step: factor per decay",
       [](C& c, const S& s) { c.trainer.schedule.gamma = s.number(0, false); }},
      {"clip-grad-norm", "0", "clip the global gradient L2 norm to this (0: off)",
       [](C& c, const S& s) { c.trainer.clipGradNorm = s.number(0); }},
      {"seed", "42", "seed of weights, shuffling and the data split",
       [](C& c, const S& s) { c.trainer.seed = s.unsignedInteger(); }},
      {"shuffle", "true", "reshuffle the training set every epoch",
       [](C& c, const S& s) { c.trainer.shuffle = s.boolean(); }, true},
      {"drop-last", "false", "sampler: drop the tail that does not divide by the world size "
       "(instead of padding with repeated samples)",
       [](C& c, const S& s) { c.trainer.dropLast = s.boolean(); }, true},
      // evaluation and output
      {"eval-every", "0", "also evaluate every N steps (0: at the end only)",
       [](C& c, const S& s) { c.trainer.evalEvery = s.integer(0); }},
      {"eval-batch-size", "1000", "samples per rank per evaluation batch",
       [](C& c, const S& s) { c.trainer.evalBatchSize = s.integer(1); }},
      {"log-every", "100", "steps between log lines (rank 0)",
       [](C& c, const S& s) { c.trainer.logEvery = s.integer(1); }},
      {"metrics-file", "", "append metrics as JSON lines to this file (rank 0; empty: none)",
       [](C& c, const S& s) { c.trainer.metricsFile = s.text(); }},
      {"log-level", "info", "debug, info, warn or error",
       [](C& c, const S& s) { c.logLevel = s.choice({"debug", "info", "warn", "error"}); }},
      // checkpoints
      {"checkpoint-dir", "", "where rank 0 writes checkpoints (empty: none)",
       [](C& c, const S& s) { c.trainer.checkpointDir = s.text(); }},
      {"checkpoint-every", "0", "steps between checkpoints (0: only at the end)",
       [](C& c, const S& s) { c.trainer.checkpointEvery = s.integer(0); }},
      {"keep-checkpoints", "3", "checkpoints kept (the newest)",
       [](C& c, const S& s) { c.trainer.keepCheckpoints = static_cast<int>(s.integer(1)); }},
      {"resume", "auto", "auto (newest valid checkpoint in checkpoint-dir), none, or a path",
       [](C& c, const S& s) {
         if (s.value.empty()) s.fail("auto, none or a checkpoint path");
         c.trainer.resume = s.text();
       }},
      // data parallelism
      {"bucket-cap-mb", "25", "gradient bucket size in MiB",
       [](C& c, const S& s) {
         c.trainer.ddp.bucketCapBytes = std::llround(s.number(0, false) * 1048576);
       }},
      {"first-bucket-cap-mb", "1", "first gradient bucket size in MiB",
       [](C& c, const S& s) {
         c.trainer.ddp.bucketCapFirstBytes = std::llround(s.number(0, false) * 1048576);
       }},
      {"find-unused-parameters", "false", "allow parameters without a gradient in a step",
       [](C& c, const S& s) { c.trainer.ddp.findUnusedParameters = s.boolean(); }, true},
      {"broadcast-buffers", "true", "broadcast buffers from rank 0 before each forward",
       [](C& c, const S& s) { c.trainer.ddp.broadcastBuffers = s.boolean(); }, true},
      {"gradient-as-bucket-view", "false", "gradients live in the communication buckets",
       [](C& c, const S& s) { c.trainer.ddp.gradientAsBucketView = s.boolean(); }, true},
      {"grad-compression", "none", "average gradients in none, fp16 or bf16",
       [](C& c, const S& s) {
         const auto v = s.choice({"none", "fp16", "bf16"});
         c.trainer.ddp.compression = v == "fp16"   ? GradCompression::kFp16
                                     : v == "bf16" ? GradCompression::kBf16
                                                   : GradCompression::kNone;
       }},
      // the process group
      {"backend", "auto", "gloo, nccl or auto (nccl when CUDA is available)",
       [](C& c, const S& s) { c.init.backend = s.choice({"auto", "gloo", "nccl"}); }},
      {"rdzv-timeout", "0", "seconds to wait for the master (0: DDPRUN_RDZV_TIMEOUT or 300)",
       [](C& c, const S& s) { secondsOrUnset(s, c.init.rendezvousTimeout); }},
      {"collective-timeout", "0",
       "seconds a collective may take (0: DDPRUN_COLLECTIVE_TIMEOUT or 1800)",
       [](C& c, const S& s) { secondsOrUnset(s, c.init.collectiveTimeout); }},
      {"threads", "0", "torch threads per rank (0: OMP_NUM_THREADS or torch's default)",
       [](C& c, const S& s) { c.threads = static_cast<int>(s.integer(0)); }},
  };
  return table;
}

const Option* findOption(const std::string& key) {
  for (const auto& o : options()) {
    if (o.key == key) return &o;
  }
  return nullptr;
}

void apply(TrainConfig& config, const Option& option, const std::string& value,
           const std::string& source) {
  option.apply(config, Setting{option.key, value, source});
  config.sources[option.key] = source;
}

void applyYamlFile(TrainConfig& config, const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw ConfigError(fmt::format("--config '{}': cannot read the file", path));
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("--config '{}': not valid YAML: {}", path, e.what()));
  }
  if (root.IsNull()) return;  // an empty file changes nothing
  if (!root.IsMap()) {
    throw ConfigError(fmt::format("--config '{}': expected a mapping of option: value, found a {}",
                                  path, root.IsSequence() ? "list" : "scalar"));
  }
  for (const auto& item : root) {
    const auto key = item.first.as<std::string>();
    const auto where = fmt::format("{}:{}", path, item.first.Mark().line + 1);
    const Option* option = findOption(key);
    if (option == nullptr || key == "config") {
      throw ConfigError(fmt::format("{}: unknown key '{}'. Keys are the long flag names without "
                                    "'--'; run 'ddptrain --help' for the list.",
                                    where, key));
    }
    if (!item.second.IsScalar()) {
      throw ConfigError(fmt::format("{}: '{}' expects a single value, found a {}", where, key,
                                    item.second.IsSequence() ? "list" : "mapping"));
    }
    apply(config, *option, item.second.Scalar(), where);
  }
}

cxxopts::Options makeCli() {
  cxxopts::Options cli("ddptrain",
                       "Data-parallel training of a model from the zoo on a real data set.\n"
                       "Rank, world size and master come from the environment (ddprun/torchrun, "
                       "PyTorchJob, MPI).\nEvery option is also a key of the --config YAML file; "
                       "flags win over the file.\n");
  auto add = cli.add_options();
  add("config", "YAML file of options (keys as the long flag names)",
      cxxopts::value<std::string>());
  for (const auto& o : options()) {
    auto value = cxxopts::value<std::string>();
    if (o.isFlag) value->implicit_value("true");
    add(o.key, fmt::format("{} (default: {})", o.help, o.defaultValue.empty() ? "\"\"" : o.defaultValue),
        value);
  }
  add("print-config", "print the resolved configuration as YAML and exit");
  add("version", "print the build (torch, CUDA, NCCL) and exit");
  add("h,help", "print this help and exit");
  return cli;
}

}  // namespace

std::string helpText() { return makeCli().help(); }

ParsedCommandLine parseCommandLine(int argc, const char* const* argv) {
  ParsedCommandLine parsed;
  auto& config = parsed.config;
  for (const auto& o : options()) apply(config, o, o.defaultValue, "default");

  auto cli = makeCli();
  cxxopts::ParseResult result;
  try {
    result = cli.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    throw ConfigError(std::string(e.what()) + ". Run 'ddptrain --help' for every option.");
  }
  if (!result.unmatched().empty()) {
    throw ConfigError(fmt::format("unexpected argument '{}'. Run 'ddptrain --help' for every option.",
                                  result.unmatched().front()));
  }
  parsed.help = result.count("help") > 0;
  parsed.version = result.count("version") > 0;
  parsed.printConfig = result.count("print-config") > 0;
  if (result.count("config")) {
    config.configFile = result["config"].as<std::string>();
    applyYamlFile(config, config.configFile);
  }
  for (const auto& argument : result.arguments()) {
    if (const Option* option = findOption(argument.key())) {
      apply(config, *option, argument.value(), "--" + argument.key());
    }
  }
  return parsed;
}

std::string toYaml(const TrainConfig& config) {
  // Re-derive each value from the config through its own source text would lose
  // nothing, but the config holds parsed values: print them in the table's order.
  const auto& t = config.trainer;
  auto mb = [](std::int64_t bytes) { return fmt::format("{}", bytes / 1048576.0); };
  auto seconds = [](const std::optional<std::chrono::milliseconds>& ms) {
    return ms ? std::to_string(ms->count() / 1000) : std::string("0");
  };
  auto b = [](bool v) { return v ? "true" : "false"; };
  // Strings as yaml-cpp quotes them (escapes included), so any path survives a round trip.
  auto q = [](const std::string& s) {
    YAML::Emitter emitter;
    emitter << YAML::DoubleQuoted << s;
    return std::string(emitter.c_str());
  };
  const char* compression = t.ddp.compression == GradCompression::kFp16   ? "fp16"
                            : t.ddp.compression == GradCompression::kBf16 ? "bf16"
                                                                          : "none";
  std::map<std::string, std::string> values = {
      {"model", config.model},
      {"gpt-layers", std::to_string(config.gptLayers)},
      {"gpt-heads", std::to_string(config.gptHeads)},
      {"gpt-embedding", std::to_string(config.gptEmbedding)},
      {"data", config.data},
      {"data-path", q(config.dataPath)},
      {"data-dir", q(config.dataPath)},
      {"test-fraction", fmt::format("{}", config.testFraction)},
      {"block-size", std::to_string(config.blockSize)},
      {"synthetic-samples", std::to_string(config.syntheticSamples)},
      {"epochs", std::to_string(t.epochs)},
      {"max-steps", std::to_string(t.maxSteps)},
      {"batch-size", std::to_string(t.batchSize)},
      {"grad-accumulation", std::to_string(t.gradAccumulation)},
      {"optimizer", t.optimizer.name},
      {"lr", fmt::format("{}", t.optimizer.lr)},
      {"momentum", fmt::format("{}", t.optimizer.momentum)},
      {"weight-decay", fmt::format("{}", t.optimizer.weightDecay)},
      {"beta1", fmt::format("{}", t.optimizer.beta1)},
      {"beta2", fmt::format("{}", t.optimizer.beta2)},
      {"lr-schedule", t.schedule.name},
      {"warmup-steps", std::to_string(t.schedule.warmupSteps)},
      {"min-lr-ratio", fmt::format("{}", t.schedule.minLrRatio)},
      {"lr-step-size", std::to_string(t.schedule.stepSize)},
      {"lr-gamma", fmt::format("{}", t.schedule.gamma)},
      {"clip-grad-norm", fmt::format("{}", t.clipGradNorm)},
      {"seed", std::to_string(t.seed)},
      {"shuffle", b(t.shuffle)},
      {"drop-last", b(t.dropLast)},
      {"eval-every", std::to_string(t.evalEvery)},
      {"eval-batch-size", std::to_string(t.evalBatchSize)},
      {"log-every", std::to_string(t.logEvery)},
      {"metrics-file", q(t.metricsFile)},
      {"log-level", config.logLevel},
      {"checkpoint-dir", q(t.checkpointDir)},
      {"checkpoint-every", std::to_string(t.checkpointEvery)},
      {"keep-checkpoints", std::to_string(t.keepCheckpoints)},
      {"resume", q(t.resume)},
      {"bucket-cap-mb", mb(t.ddp.bucketCapBytes)},
      {"first-bucket-cap-mb", mb(t.ddp.bucketCapFirstBytes)},
      {"find-unused-parameters", b(t.ddp.findUnusedParameters)},
      {"broadcast-buffers", b(t.ddp.broadcastBuffers)},
      {"gradient-as-bucket-view", b(t.ddp.gradientAsBucketView)},
      {"grad-compression", compression},
      {"backend", config.init.backend},
      {"rdzv-timeout", seconds(config.init.rendezvousTimeout)},
      {"collective-timeout", seconds(config.init.collectiveTimeout)},
      {"threads", std::to_string(config.threads)},
  };
  std::ostringstream out;
  for (const auto& o : options()) out << o.key << ": " << values.at(o.key) << "\n";
  return out.str();
}

}  // namespace ddp::train
