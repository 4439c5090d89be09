#include "examples/ddptrain/train_config.h"

#include <charconv>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <type_traits>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>
#include <cxxopts.hpp>

#include "data/dataset.h"
#include "models/model_zoo.h"
#include "runtime/env/value_parser.h"

namespace ddptrain {
namespace {

using ddp::ConfigError;

// The longest command-line argument taken (see parseCommandLine).
constexpr std::size_t kMaxArgumentBytes = 8192;
// Torch threads per rank: beyond any machine, and the first parallel region creates them
// all (100000 ended in SIGSEGV when thread creation failed).
constexpr std::int64_t kMaxThreads = 1024;

// A value and where it came from, for parsers and their errors.
struct Setting {
  const std::string& key;
  const std::string& value;
  const std::string& source;

  [[noreturn]] void fail(const std::string& expected) const {
    throw ConfigError(
        fmt::format("{}: expected {}, found '{}' (from {}). Run 'ddptrain --help' "
                    "for every option.",
                    key, expected, value, source));
  }
  // The one integer parser (env/value_parser.h) within the field's own range.
  std::int64_t integer(std::int64_t min, std::int64_t max) const {
    const auto parsed = ddp::env::parseInteger(value, min, max);
    if (!parsed.value) {
      fail(max == std::numeric_limits<std::int64_t>::max()
               ? fmt::format("an integer >= {}", min)
               : fmt::format("an integer in [{}, {}]", min, max));
    }
    return *parsed.value;
  }
  // Seeds take the whole unsigned 64-bit range.
  std::uint64_t unsignedInteger() const {
    std::uint64_t out = 0;
    const bool digits =
        !value.empty() && value.find_first_not_of("0123456789") == std::string::npos;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
    if (!digits || ec != std::errc() || end != value.data() + value.size()) {
      fail("an integer in [0, 18446744073709551615]");
    }
    return out;
  }
  // `expected` replaces "a number > min" in the message when the caller narrows the range.
  double number(double min, bool inclusive = true, const std::string& expected = "") const {
    double out = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
    if (ec != std::errc() || end != value.data() + value.size() || !std::isfinite(out) ||
        out < min || (!inclusive && out == min)) {
      fail(expected.empty() ? fmt::format("a number {} {}", inclusive ? ">=" : ">", min)
                            : expected);
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
  std::string choice(const std::vector<std::string>& choices) const {
    std::string list;
    for (const auto& c : choices) {
      if (value == c) return value;
      list += (list.empty() ? "" : ", ") + c;
    }
    fail("one of " + list);
  }
  std::string text() const { return value; }
  // A path of `kind` or one that does not exist (yet): env::checkPath, before anything
  // opens it. Empty values mean "none" and are not paths.
  std::string path(ddp::env::FileKind kind, const std::string& expected) const {
    if (value.empty()) return value;
    if (const auto problem = ddp::env::checkPath(value, kind, /*mayBeMissing=*/true)) {
      throw ConfigError(fmt::format(
          "{}: expected {}, found {} at '{}' (from {}). Run 'ddptrain --help' for every option.",
          key, expected, problem->found, value, source));
    }
    return value;
  }
};

using C = TrainConfig;

struct Option {
  std::string key;
  std::string help;
  std::function<void(C&, const Setting&)> apply;
  std::function<std::string(const C&)> format;  // the value as YAML, for toYaml and --help
  bool isFlag = false;                          // a boolean: `--key` alone means true
};

// Binders: each makes one option from the field it reads and writes (an accessor), so
// parsing, toYaml and the defaults in --help come from the same place.
//
// An integer within [min, max] and within its field (an int stops at 2^31 - 1, a size_t
// at 2^63 - 1 like every other integer): no value is ever wrapped.
template <typename Get>
Option integer(std::string key, std::string help, Get get, std::int64_t min,
               std::int64_t max = std::numeric_limits<std::int64_t>::max()) {
  return {std::move(key), std::move(help),
          [get, min, max](C& c, const Setting& s) {
            using Field = std::remove_reference_t<decltype(get(c))>;
            constexpr auto fieldMax = static_cast<std::int64_t>(std::min<std::uint64_t>(
                std::numeric_limits<Field>::max(), std::numeric_limits<std::int64_t>::max()));
            get(c) = static_cast<Field>(s.integer(min, std::min(max, fieldMax)));
          },
          [get](const C& c) { return std::to_string(get(const_cast<C&>(c))); }};
}

// Seeds take the whole unsigned 64-bit range.
template <typename Get>
Option seed(std::string key, std::string help, Get get) {
  return {std::move(key), std::move(help),
          [get](C& c, const Setting& s) { get(c) = s.unsignedInteger(); },
          [get](const C& c) { return std::to_string(get(const_cast<C&>(c))); }};
}

template <typename Get>
Option number(std::string key, std::string help, Get get, double min, bool inclusive = true) {
  return {std::move(key), std::move(help),
          [get, min, inclusive](C& c, const Setting& s) { get(c) = s.number(min, inclusive); },
          [get](const C& c) { return fmt::format("{}", get(const_cast<C&>(c))); }};
}

template <typename Get>
Option fraction(std::string key, std::string help, Get get) {
  return {std::move(key), std::move(help), [get](C& c, const Setting& s) { get(c) = s.fraction(); },
          [get](const C& c) { return fmt::format("{}", get(const_cast<C&>(c))); }};
}

template <typename Get>
Option boolean(std::string key, std::string help, Get get) {
  return {std::move(key), std::move(help), [get](C& c, const Setting& s) { get(c) = s.boolean(); },
          [get](const C& c) { return std::string(get(const_cast<C&>(c)) ? "true" : "false"); },
          true};
}

template <typename Get>
Option choice(std::string key, std::string help, Get get, std::vector<std::string> choices) {
  return {std::move(key), std::move(help),
          [get, choices](C& c, const Setting& s) { get(c) = s.choice(choices); },
          [get](const C& c) { return get(const_cast<C&>(c)); }};
}

// Strings as yaml-cpp quotes them (escapes included), so any path survives a round trip.
std::string yamlQuoted(const std::string& value) {
  YAML::Emitter emitter;
  emitter << YAML::DoubleQuoted << value;
  return emitter.c_str();
}

template <typename Get>
Option string(std::string key, std::string help, Get get) {
  return {std::move(key), std::move(help), [get](C& c, const Setting& s) { get(c) = s.text(); },
          [get](const C& c) { return yamlQuoted(get(const_cast<C&>(c))); }};
}

// A path that ddptrain writes (Setting::path): of `kind` if it exists.
template <typename Get>
Option outputPath(std::string key, std::string help, Get get, ddp::env::FileKind kind) {
  Option option = string(std::move(key), std::move(help), get);
  option.apply = [get, kind](C& c, const Setting& s) {
    get(c) = s.path(kind, kind == ddp::env::FileKind::kDirectory
                              ? "a directory (or a path to create)"
                              : "a regular file or /dev/null (or a path to create)");
  };
  return option;
}

// Sizes in MiB held as bytes: printed back in MiB with every digit. At least one byte (a
// size that rounds to 0 bytes would print back as 0, which is refused) and at most 1 TiB
// (llround of 1e300 MiB is undefined).
constexpr double kMaxMebibytes = 1048576;

template <typename Get>
Option mebibytes(std::string key, std::string help, Get get) {
  return {std::move(key), std::move(help),
          [get](C& c, const Setting& s) {
            const auto expected =
                fmt::format("a size in MiB in (0, {}], at least one byte", kMaxMebibytes);
            const double mebibytes = s.number(0, false, expected);
            const auto bytes = mebibytes <= kMaxMebibytes ? std::llround(mebibytes * 1048576) : 0;
            if (bytes < 1) s.fail(expected);
            get(c) = bytes;
          },
          [get](const C& c) { return fmt::format("{}", get(const_cast<C&>(c)) / 1048576.0); }};
}

// Seconds held as an optional duration: 0 is unset (the environment or the default).
template <typename Get>
Option seconds(std::string key, std::string help, Get get) {
  return {std::move(key), std::move(help),
          [get](C& c, const Setting& s) {
            const auto value = s.integer(0, ddp::env::kMaxTimeoutSeconds);
            get(c) =
                value == 0 ? std::nullopt : std::optional(std::chrono::milliseconds(value * 1000));
          },
          [get](const C& c) {
            const auto& value = get(const_cast<C&>(c));
            return value ? std::to_string(value->count() / 1000) : std::string("0");
          }};
}

#define FIELD(expr) \
  [](C & c) -> auto& { return c.expr; }

// The one table of options, in --help and toYaml order.
const std::vector<Option>& options() {
  static const std::vector<Option> table = [] {
    std::vector<Option> t = {
        // model
        choice("model", fmt::format("model: {}", fmt::join(ddp::models::modelNames(), ", ")),
               FIELD(model), ddp::models::modelNames()),
        integer("gpt-layers", "gpt: transformer blocks", FIELD(gptLayers), 1),
        integer("gpt-heads", "gpt: attention heads (must divide gpt-embedding)", FIELD(gptHeads),
                1),
        integer("gpt-embedding", "gpt: embedding width", FIELD(gptEmbedding), 1),
        // data
        choice("data",
               fmt::format("data set kind: {} (idx: an MNIST-format directory)",
                           fmt::join(ddp::data::datasetKinds(), ", ")),
               FIELD(data), ddp::data::datasetKinds()),
        string("data-path",
               "idx: directory with train-*/t10k-* files; csv, text: the file (.gz or plain)",
               FIELD(dataPath)),
        string("data-dir", "the same as data-path (the name MNIST users know)", FIELD(dataPath)),
        fraction("test-fraction", "csv, text: share held out for evaluation, in (0, 1)",
                 FIELD(testFraction)),
        integer("block-size", "text: characters per sample", FIELD(blockSize), 1),
        integer("synthetic-samples", "synthetic: training samples", FIELD(syntheticSamples), 1),
        // schedule of the run
        integer("epochs", "passes over the training set", FIELD(trainer.epochs), 1),
        integer("max-steps", "stop after this many optimizer steps instead (0: by epochs)",
                FIELD(trainer.maxSteps), 0),
        integer("batch-size", "samples per rank per micro-batch", FIELD(trainer.batchSize), 1),
        integer("grad-accumulation",
                "micro-batches per optimizer step (all but the last without gradient "
                "communication)",
                FIELD(trainer.gradAccumulation), 1),
        integer("prefetch-batches", "micro-batches read ahead on a background thread (0: none)",
                FIELD(trainer.prefetchBatches), 0),
        // optimizer
        choice("optimizer", "sgd (with momentum), adam or adamw", FIELD(trainer.optimizer.name),
               {"sgd", "adam", "adamw"}),
        number("lr", "peak learning rate", FIELD(trainer.optimizer.lr), 0, false),
        number("momentum", "sgd momentum", FIELD(trainer.optimizer.momentum), 0),
        number("weight-decay", "L2 penalty (sgd, adam) or decoupled decay (adamw)",
               FIELD(trainer.optimizer.weightDecay), 0),
        fraction("beta1", "adam, adamw: first moment decay", FIELD(trainer.optimizer.beta1)),
        fraction("beta2", "adam, adamw: second moment decay", FIELD(trainer.optimizer.beta2)),
        choice("lr-schedule",
               "constant, cosine (to min-lr-ratio x lr) or step (x lr-gamma every lr-step-size "
               "steps)",
               FIELD(trainer.schedule.name), {"constant", "cosine", "step"}),
        integer("warmup-steps", "linear warm-up steps before the schedule",
                FIELD(trainer.schedule.warmupSteps), 0),
        number("min-lr-ratio", "cosine: the final learning rate as a fraction of lr",
               FIELD(trainer.schedule.minLrRatio), 0),
        integer("lr-step-size", "step: steps between decays", FIELD(trainer.schedule.stepSize), 1),
        number("lr-gamma", "step: factor per decay", FIELD(trainer.schedule.gamma), 0, false),
        number("clip-grad-norm", "clip the global gradient L2 norm to this (0: off)",
               FIELD(trainer.clipGradNorm), 0),
        seed("seed", "seed of weights, shuffling and the data split", FIELD(trainer.seed)),
        boolean("shuffle", "reshuffle the training set every epoch", FIELD(trainer.shuffle)),
        boolean("drop-last",
                "sampler: drop the tail that does not divide by the world size (instead of "
                "padding with repeated samples)",
                FIELD(trainer.dropLast)),
        // evaluation and output
        integer("eval-every", "also evaluate every N steps (0: at the end only)",
                FIELD(trainer.evalEvery), 0),
        integer("eval-batch-size", "samples per rank per evaluation batch",
                FIELD(trainer.evalBatchSize), 1),
        integer("log-every", "steps between log lines (rank 0)", FIELD(trainer.logEvery), 1),
        boolean("progress",
                "rank 0's progress bar when stderr is a terminal (under ddprun: ddprun's; "
                "false: none, as ddprun's no-progress flag)",
                FIELD(trainer.progressBar)),
        number("straggler-threshold",
               "name a rank whose compute time per step is this fraction over the median "
               "(checked every log-every steps)",
               FIELD(trainer.stragglerThreshold), 0, false),
        outputPath("metrics-file",
                   "append metrics as JSON lines to this file (rank 0; empty: none)",
                   FIELD(trainer.metricsFile), ddp::env::FileKind::kWritableFile),
        choice("log-level", "debug, info, warn, error or off (else DDPRUN_LOG_LEVEL)",
               FIELD(logLevel), {"debug", "info", "warn", "error", "off"}),
        // checkpoints
        outputPath("checkpoint-dir", "where rank 0 writes checkpoints (empty: none)",
                   FIELD(trainer.checkpointDir), ddp::env::FileKind::kDirectory),
        integer("checkpoint-every", "steps between checkpoints (0: only at the end)",
                FIELD(trainer.checkpointEvery), 0),
        number("checkpoint-every-seconds",
               "also checkpoint when this many seconds passed since the last one (0: by steps "
               "only)",
               FIELD(trainer.checkpointEverySeconds), 0),
        boolean("checkpoint-async",
                "write periodic checkpoints in the background after a snapshot in memory "
                "(false: training waits for each write)",
                FIELD(trainer.checkpointAsync)),
        integer("keep-checkpoints", "checkpoints kept (the newest)", FIELD(trainer.keepCheckpoints),
                1),
        string("resume",
               "auto (newest valid checkpoint in checkpoint-dir), none (start over: the earlier "
               "run's files move to checkpoint-dir/superseded/), or a path",
               FIELD(trainer.resume)),
        {"checkpoint-mode", "permission bits (octal) of checkpoints, manifests and the journal",
         [](C& c, const Setting& s) {
           unsigned mode = 0;
           const auto [end, ec] =
               std::from_chars(s.value.data(), s.value.data() + s.value.size(), mode, 8);
           if (s.value.empty() || ec != std::errc() || end != s.value.data() + s.value.size() ||
               mode > 0777) {
             s.fail("octal permission bits from 0 to 0777, such as 0640 or 0600");
           }
           c.trainer.checkpointFileMode = mode;
         },
         [](const C& c) { return fmt::format("'{:04o}'", c.trainer.checkpointFileMode); }},
        integer("max-stalled-restarts",
                "after this many failed attempts in a row without a new checkpoint, the next "
                "failure exits 4 (permanent) instead of 200 (0: never)",
                FIELD(trainer.maxStalledRestarts), 0),
        integer("skip-nonfinite-steps",
                "skip up to N steps whose loss or gradients are NaN/Inf (0: stop at the first, "
                "exit 3)",
                FIELD(trainer.nonFiniteSkipLimit), 0),
        // data parallelism
        mebibytes("bucket-cap-mb", "gradient bucket size in MiB",
                  FIELD(trainer.ddp.bucketCapBytes)),
        mebibytes("first-bucket-cap-mb", "first gradient bucket size in MiB",
                  FIELD(trainer.ddp.bucketCapFirstBytes)),
        boolean("find-unused-parameters", "allow parameters without a gradient in a step",
                FIELD(trainer.ddp.findUnusedParameters)),
        boolean("broadcast-buffers", "broadcast buffers from rank 0 before each forward",
                FIELD(trainer.ddp.broadcastBuffers)),
        boolean("gradient-as-bucket-view", "gradients live in the communication buckets",
                FIELD(trainer.ddp.gradientAsBucketView)),
        {"grad-compression", "average gradients in none, fp16 or bf16",
         [](C& c, const Setting& s) {
           const auto v = s.choice({"none", "fp16", "bf16"});
           c.trainer.ddp.compression = v == "fp16"   ? ddp::GradCompression::kFp16
                                       : v == "bf16" ? ddp::GradCompression::kBf16
                                                     : ddp::GradCompression::kNone;
         },
         [](const C& c) {
           const auto compression = c.trainer.ddp.compression;
           return std::string(compression == ddp::GradCompression::kFp16   ? "fp16"
                              : compression == ddp::GradCompression::kBf16 ? "bf16"
                                                                           : "none");
         }},
        // the process group
        choice("backend", "gloo, nccl or auto (nccl when CUDA is available)", FIELD(init.backend),
               {"auto", "gloo", "nccl"}),
        choice("device",
               "cpu, cuda or auto (cuda under nccl, else cpu); cuda under gloo shares the "
               "visible GPUs among the ranks",
               FIELD(init.device), {"auto", "cpu", "cuda"}),
        seconds("rdzv-timeout", "seconds to wait for the master (0: DDPRUN_RDZV_TIMEOUT or 300)",
                FIELD(init.rendezvousTimeout)),
        seconds("collective-timeout",
                "seconds a collective may take (0: DDPRUN_COLLECTIVE_TIMEOUT or 1800)",
                FIELD(init.collectiveTimeout)),
        integer("threads", "torch threads per rank (0: OMP_NUM_THREADS or torch's default)",
                FIELD(threads), 0, kMaxThreads),
    };
    // An empty resume would mean nothing; say what it takes. A path is rank 0's to read
    // (the others get the checkpoint broadcast): of the right type if it is there.
    for (auto& option : t) {
      if (option.key != "resume") continue;
      option.apply = [apply = option.apply](C& c, const Setting& s) {
        if (s.value.empty()) s.fail("auto, none or a checkpoint path");
        if (s.value != "auto" && s.value != "none") {
          s.path(ddp::env::FileKind::kRegularFile, "auto, none or a regular file");
        }
        apply(c, s);
      };
    }
    return t;
  }();
  return table;
}

#undef FIELD

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

// A node that is not a scalar, as a message's `found`.
std::string describeNode(const YAML::Node& node) {
  return node.IsSequence() ? "a list" : node.IsMap() ? "a mapping" : "no value";
}

void applyYamlFile(TrainConfig& config, const std::string& path) {
  // yaml-cpp reads a directory or a FIFO as a stream (a FIFO: waiting for a writer).
  if (const auto problem = ddp::env::checkPath(path, ddp::env::FileKind::kRegularFile, false)) {
    throw ConfigError(
        fmt::format("--config '{}': expected a YAML file, found {}. Pass the path of the file.",
                    path, problem->found));
  }
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw ConfigError(
        fmt::format("--config '{}': cannot read the file. Check its permissions.", path));
  } catch (const YAML::Exception& e) {
    throw ConfigError(
        fmt::format("--config '{}': not valid YAML: {}. Expected one `option: value` a line (as "
                    "--print-config writes them).",
                    path, e.what()));
  }
  if (root.IsNull()) return;  // an empty file changes nothing
  if (!root.IsMap()) {
    throw ConfigError(
        fmt::format("--config '{}': expected a mapping of option: value, found a {}. Write one "
                    "`option: value` a line (as --print-config writes them).",
                    path, root.IsSequence() ? "list" : "scalar"));
  }
  for (const auto& item : root) {
    const auto where = fmt::format("{}:{}", path, item.first.Mark().line + 1);
    if (!item.first.IsScalar()) {  // YAML's complex keys ("? [a]")
      throw ConfigError(
          fmt::format("{}: expected an option name as the key, found {}. Keys "
                      "are the long flag names without '--'.",
                      where, describeNode(item.first)));
    }
    const auto key = item.first.Scalar();
    const Option* option = findOption(key);
    if (option == nullptr || key == "config") {
      throw ConfigError(
          fmt::format("{}: unknown key '{}'. Keys are the long flag names without "
                      "'--'; run 'ddptrain --help' for the list.",
                      where, key));
    }
    if (!item.second.IsScalar()) {
      throw ConfigError(
          fmt::format("{}: '{}' expects a single value, found {}. Write it as "
                      "`{}: <value>`.",
                      where, key, describeNode(item.second), key));
    }
    apply(config, *option, item.second.Scalar(), where);
  }
}

// The default as --help shows it: the struct's value, strings without their quotes.
std::string defaultText(const Option& option) {
  auto text = option.format(TrainConfig{});
  if (text.size() >= 2 && text.front() == '"') text = text.substr(1, text.size() - 2);
  return text.empty() ? "\"\"" : text;
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
    add(o.key, fmt::format("{} (default: {})", o.help, defaultText(o)), value);
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
  for (const auto& o : options()) config.sources[o.key] = "default";

  // cxxopts matches every argument against a std::regex, and libstdc++'s matcher recurses
  // once per character: an argument of 30 000 bytes that starts with '-' overflowed the
  // 8 MiB stack (SIGSEGV). No flag, value or path comes near the bound (PATH_MAX is 4096).
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument(argv[i]);
    if (argument.size() > kMaxArgumentBytes) {
      throw ConfigError(fmt::format(
          "argument {} ('{}...'): expected at most {} bytes, found {}. No flag, value or path "
          "is that long. Run 'ddptrain --help' for every option.",
          i, argument.substr(0, 40), kMaxArgumentBytes, argument.size()));
    }
  }
  auto cli = makeCli();
  cxxopts::ParseResult result;
  try {
    result = cli.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    throw ConfigError(std::string(e.what()) + ". Run 'ddptrain --help' for every option.");
  }
  if (!result.unmatched().empty()) {
    throw ConfigError(
        fmt::format("unexpected argument '{}'. Run 'ddptrain --help' for every option.",
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
  std::ostringstream out;
  for (const auto& o : options()) out << o.key << ": " << o.format(config) << "\n";
  return out.str();
}

}  // namespace ddptrain
