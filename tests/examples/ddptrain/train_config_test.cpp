// ddp::train::parseCommandLine, toYaml and helpText (Note [Configuration precedence]):
// default < the --config YAML file < flags, `sources` saying where each value came from;
// unknown flags and keys and bad values are ConfigErrors naming the option, the value
// and the source; toYaml is loadable with --config; --help documents every default.
#include "examples/ddptrain/train_config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "runtime/exit_codes.h"

namespace ddptrain {
using ddp::ConfigError;
namespace {

namespace fs = std::filesystem;

// parseCommandLine on {"ddptrain", args...}.
ParsedCommandLine parse(std::vector<std::string> args) {
  args.insert(args.begin(), "ddptrain");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return parseCommandLine(static_cast<int>(argv.size()), argv.data());
}

// The message of the ConfigError that parsing `args` throws, or what happened instead.
std::string configErrorOf(std::vector<std::string> args) {
  try {
    parse(std::move(args));
  } catch (const ConfigError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("unexpected exception type: ") + e.what();
  }
  return "no exception";
}

constexpr const char* kHelpHint = ". Run 'ddptrain --help' for every option.";

// The option keys in toYaml's order ("key: value" lines).
std::vector<std::pair<std::string, std::string>> yamlEntries(const std::string& yaml) {
  std::vector<std::pair<std::string, std::string>> entries;
  std::istringstream in(yaml);
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(": ");
    if (colon == std::string::npos) {
      ADD_FAILURE() << "not a 'key: value' line: '" << line << "'";
      continue;
    }
    entries.emplace_back(line.substr(0, colon), line.substr(colon + 2));
  }
  return entries;
}

class TrainConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ddprun_train_config_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes `text` to <dir>/<name> and returns the path.
  std::string writeFile(const std::string& name, const std::string& text) {
    const auto path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  fs::path dir_;
};

TEST_F(TrainConfigTest, DefaultsWithoutArguments) {
  const auto parsed = parse({});
  const auto& c = parsed.config;
  EXPECT_FALSE(parsed.help);
  EXPECT_FALSE(parsed.version);
  EXPECT_FALSE(parsed.printConfig);
  EXPECT_EQ(c.model, "cnn");
  EXPECT_EQ(c.data, "idx");
  EXPECT_EQ(c.dataPath, "/usr/share/datasets/fashion-mnist");
  EXPECT_DOUBLE_EQ(c.testFraction, 0.2);
  EXPECT_EQ(c.trainer.epochs, 2);
  EXPECT_EQ(c.trainer.batchSize, 64);
  EXPECT_EQ(c.trainer.optimizer.name, "sgd");
  EXPECT_DOUBLE_EQ(c.trainer.optimizer.lr, 0.05);
  EXPECT_EQ(c.trainer.schedule.name, "constant");
  EXPECT_EQ(c.trainer.seed, 42u);
  EXPECT_TRUE(c.trainer.shuffle);
  EXPECT_FALSE(c.trainer.dropLast);
  EXPECT_EQ(c.trainer.keepCheckpoints, 3);
  EXPECT_EQ(c.trainer.resume, "auto");
  EXPECT_EQ(c.trainer.ddp.bucketCapBytes, 25 * 1048576);
  EXPECT_EQ(c.trainer.ddp.bucketCapFirstBytes, 1 * 1048576);
  EXPECT_EQ(c.init.backend, "auto");
  EXPECT_EQ(c.init.device, "auto");
  EXPECT_FALSE(c.init.rendezvousTimeout.has_value());
  EXPECT_FALSE(c.init.collectiveTimeout.has_value());
  EXPECT_EQ(c.logLevel, "info");
  EXPECT_EQ(c.configFile, "");
  // Every option has a source, and here it is the default.
  const auto entries = yamlEntries(toYaml(c));
  ASSERT_EQ(entries.size(), c.sources.size());
  for (const auto& [key, value] : entries) {
    ASSERT_EQ(c.sources.count(key), 1u) << key;
    EXPECT_EQ(c.sources.at(key), "default") << key;
  }
}

TEST_F(TrainConfigTest, YamlOverridesDefaultsAndFlagsOverrideYaml) {
  const auto file = writeFile("run.yaml",
                              "# a comment line\n"
                              "lr: 0.01\n"
                              "batch-size: 32\n"
                              "\n"
                              "optimizer: adam\n"
                              "drop-last: true\n");
  {
    const auto c = parse({"--config", file}).config;
    EXPECT_EQ(c.configFile, file);
    EXPECT_DOUBLE_EQ(c.trainer.optimizer.lr, 0.01);
    EXPECT_EQ(c.trainer.batchSize, 32);
    EXPECT_EQ(c.trainer.optimizer.name, "adam");
    EXPECT_TRUE(c.trainer.dropLast);
    EXPECT_EQ(c.sources.at("lr"), file + ":2");
    EXPECT_EQ(c.sources.at("batch-size"), file + ":3");
    EXPECT_EQ(c.sources.at("optimizer"), file + ":5");
    EXPECT_EQ(c.sources.at("drop-last"), file + ":6");
    EXPECT_EQ(c.trainer.epochs, 2);
    EXPECT_EQ(c.sources.at("epochs"), "default");
  }
  // Flags win, wherever they stand relative to --config.
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--config", file, "--lr", "0.2", "--epochs=5", "--drop-last=false"},
           {"--lr", "0.2", "--epochs=5", "--drop-last=false", "--config", file}}) {
    const auto c = parse(args).config;
    EXPECT_DOUBLE_EQ(c.trainer.optimizer.lr, 0.2);
    EXPECT_EQ(c.sources.at("lr"), "--lr");
    EXPECT_EQ(c.trainer.epochs, 5);
    EXPECT_EQ(c.sources.at("epochs"), "--epochs");
    EXPECT_FALSE(c.trainer.dropLast);
    EXPECT_EQ(c.sources.at("drop-last"), "--drop-last");
    EXPECT_EQ(c.trainer.batchSize, 32);  // still the file's
    EXPECT_EQ(c.sources.at("batch-size"), file + ":3");
    EXPECT_EQ(c.sources.at("model"), "default");
  }
}

TEST_F(TrainConfigTest, FlagsOfEveryKind) {
  const auto parsed = parse({"--model", "gpt", "--gpt-layers=3", "--shuffle=false", "--drop-last",
                             "--rdzv-timeout", "30", "--collective-timeout=0", "--bucket-cap-mb",
                             "4", "--grad-compression", "bf16", "--seed", "7", "--print-config"});
  const auto& c = parsed.config;
  EXPECT_TRUE(parsed.printConfig);
  EXPECT_EQ(c.model, "gpt");
  EXPECT_EQ(c.gptLayers, 3);
  EXPECT_FALSE(c.trainer.shuffle);
  EXPECT_TRUE(c.trainer.dropLast) << "a boolean flag alone means true";
  EXPECT_EQ(c.sources.at("drop-last"), "--drop-last");
  ASSERT_TRUE(c.init.rendezvousTimeout.has_value());
  EXPECT_EQ(c.init.rendezvousTimeout->count(), 30000);
  EXPECT_FALSE(c.init.collectiveTimeout.has_value()) << "0 means unset";
  EXPECT_EQ(c.trainer.ddp.bucketCapBytes, 4 * 1048576);
  EXPECT_EQ(c.trainer.ddp.compression, ddp::GradCompression::kBf16);
  EXPECT_EQ(c.trainer.seed, 7u);
  EXPECT_EQ(parse({"--device", "cuda"}).config.init.device, "cuda");
  EXPECT_EQ(parse({"--device=cpu"}).config.init.device, "cpu");

  EXPECT_TRUE(parse({"--help"}).help);
  EXPECT_TRUE(parse({"-h"}).help);
  EXPECT_TRUE(parse({"--version"}).version);
}

// Integers are checked against the field they land in: no silent wrap of an int, and the
// seed keeps the whole unsigned 64-bit range.
TEST_F(TrainConfigTest, IntegersFitTheirField) {
  EXPECT_EQ(parse({"--seed", "18446744073709551615"}).config.trainer.seed, 18446744073709551615ull);
  EXPECT_EQ(configErrorOf({"--seed", "-1"}),
            "seed: expected an integer in [0, 18446744073709551615], found '-1' (from --seed)" +
                std::string(kHelpHint));
  EXPECT_EQ(configErrorOf({"--epochs", "4294967297"}),
            "epochs: expected an integer in [1, 2147483647], found '4294967297' (from --epochs)" +
                std::string(kHelpHint));
  EXPECT_EQ(parse({"--epochs", "2147483647"}).config.trainer.epochs, 2147483647);
}

// Every integer option, one past its field's limit: an error, never a wrapped value (int
// fields stop at 2^31 - 1, int64 ones at 2^63 - 1). --threads stops at 1024: 100000 made
// the first parallel region create threads until one failed (SIGSEGV).
TEST_F(TrainConfigTest, EveryIntegerStopsAtItsLimit) {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"epochs", "4294967297", "[1, 2147483647]"},
      {"grad-accumulation", "2147483648", "[1, 2147483647]"},
      {"keep-checkpoints", "2147483648", "[1, 2147483647]"},
      {"threads", "2147483648", "[0, 1024]"},
      {"threads", "1025", "[0, 1024]"},
      {"prefetch-batches", "9223372036854775808", ">= 0"},
      {"batch-size", "9223372036854775808", ">= 1"},
      {"max-steps", "18446744073709551616", ">= 0"},
  };
  for (const auto& [option, value, range] : cases) {
    const std::string expected = range[0] == '[' ? "an integer in " + range : "an integer " + range;
    EXPECT_EQ(configErrorOf({"--" + option, value}), option + ": expected " + expected +
                                                         ", found '" + value + "' (from --" +
                                                         option + ")" + kHelpHint);
  }
  const auto limits = parse({"--grad-accumulation", "2147483647", "--keep-checkpoints",
                             "2147483647", "--threads", "1024"})
                          .config;
  EXPECT_EQ(limits.trainer.gradAccumulation, 2147483647);
  EXPECT_EQ(limits.trainer.keepCheckpoints, 2147483647);
  EXPECT_EQ(limits.threads, 1024);
}

TEST_F(TrainConfigTest, UnknownFlagIsAConfigError) {
  EXPECT_EQ(configErrorOf({"--learning-rate", "0.1"}),
            "Option \u2018learning-rate\u2019 does not exist" + std::string(kHelpHint));
  EXPECT_EQ(configErrorOf({"--lr", "0.1", "stray"}),
            "unexpected argument 'stray'" + std::string(kHelpHint));
}

TEST_F(TrainConfigTest, UnknownYamlKeyNamesFileLineAndKey) {
  const auto file = writeFile("typo.yaml", "lr: 0.1\nepochs: 3\nbatchsize: 32\n");
  EXPECT_EQ(configErrorOf({"--config", file}),
            file +
                ":3: unknown key 'batchsize'. Keys are the long flag names without '--'; "
                "run 'ddptrain --help' for the list.");
  const auto nested = writeFile("nested.yaml", "config: other.yaml\n");
  EXPECT_EQ(configErrorOf({"--config", nested}),
            nested +
                ":1: unknown key 'config'. Keys are the long flag names without '--'; "
                "run 'ddptrain --help' for the list.");
}

TEST_F(TrainConfigTest, BadValuesNameOptionValueAndSource) {
  EXPECT_EQ(configErrorOf({"--lr", "fast"}),
            "lr: expected a number > 0, found 'fast' (from --lr)" + std::string(kHelpHint));
  EXPECT_EQ(configErrorOf({"--lr=0"}),
            "lr: expected a number > 0, found '0' (from --lr)" + std::string(kHelpHint));
  EXPECT_EQ(configErrorOf({"--batch-size=-3"}),
            "batch-size: expected an integer >= 1, found '-3' (from --batch-size)" +
                std::string(kHelpHint));
  EXPECT_EQ(configErrorOf({"--batch-size", "3.5"}),
            "batch-size: expected an integer >= 1, found '3.5' (from --batch-size)" +
                std::string(kHelpHint));
  EXPECT_EQ(configErrorOf({"--device", "gpu"}),
            "device: expected one of auto, cpu, cuda, found 'gpu' (from --device)" +
                std::string(kHelpHint));
  EXPECT_EQ(configErrorOf({"--optimizer", "lion"}),
            "optimizer: expected one of sgd, adam, adamw, found 'lion' (from --optimizer)" +
                std::string(kHelpHint));
  EXPECT_EQ(configErrorOf({"--test-fraction", "1.5"}),
            "test-fraction: expected a number in (0, 1), found '1.5' (from --test-fraction)" +
                std::string(kHelpHint));
  EXPECT_EQ(
      configErrorOf({"--shuffle=maybe"}),
      "shuffle: expected true or false, found 'maybe' (from --shuffle)" + std::string(kHelpHint));
  EXPECT_EQ(configErrorOf({"--resume="}),
            "resume: expected auto, none or a checkpoint path, found '' (from --resume)" +
                std::string(kHelpHint));

  // The same parser for the file, with file:line as the source.
  const auto file = writeFile("bad.yaml", "epochs: 3\ntest-fraction: 1.5\n");
  EXPECT_EQ(configErrorOf({"--config", file}),
            "test-fraction: expected a number in (0, 1), found '1.5' (from " + file + ":2)" +
                std::string(kHelpHint));
  const auto lr = writeFile("lr.yaml", "lr: fast\n");
  EXPECT_EQ(configErrorOf({"--config", lr}),
            "lr: expected a number > 0, found 'fast' (from " + lr + ":1)" + std::string(kHelpHint));
  const auto list = writeFile("list.yaml", "epochs: 3\nlr: [0.1, 0.2]\n");
  EXPECT_EQ(configErrorOf({"--config", list}),
            list + ":2: 'lr' expects a single value, found a list. Write it as `lr: <value>`.");
  // A key without a value, or a null key, was said to be "a mapping".
  const auto empty = writeFile("empty-value.yaml", "epochs:\n");
  EXPECT_EQ(configErrorOf({"--config", empty}),
            empty +
                ":1: 'epochs' expects a single value, found no value. Write it as "
                "`epochs: <value>`.");
  const auto nullKey = writeFile("null-key.yaml", "~: 1\n");
  EXPECT_EQ(configErrorOf({"--config", nullKey}),
            nullKey +
                ":1: expected an option name as the key, found no value. Keys are the "
                "long flag names without '--'.");
}

// Found by train_config_fuzz_test.cpp: a size that rounds to 0 bytes or past int64
// (llround of 1e300 MiB) was taken, and toYaml then wrote a value --config refuses; an
// argument of 30 000 bytes that starts with '-' overflowed the stack in the std::regex that
// cxxopts matches every argument with (SIGSEGV).
TEST_F(TrainConfigTest, SizesAndArgumentsAreBounded) {
  for (const std::string mib : {"1e-7", "4.9e-324", "1048577", "1e300", "9223372036854775808"}) {
    EXPECT_EQ(configErrorOf({"--bucket-cap-mb", mib}),
              "bucket-cap-mb: expected a size in MiB in (0, 1048576], at least one byte, found '" +
                  mib + "' (from --bucket-cap-mb)" + kHelpHint);
  }
  EXPECT_EQ(parse({"--bucket-cap-mb", "1048576"}).config.trainer.ddp.bucketCapBytes,
            std::int64_t{1} << 40);
  EXPECT_EQ(parse({"--first-bucket-cap-mb", "0.000001"}).config.trainer.ddp.bucketCapFirstBytes, 1);
  const std::string longFlag = "--" + std::string(30000, 'a');
  EXPECT_EQ(configErrorOf({longFlag}),
            "argument 1 ('--aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'): expected at most 8192 "
            "bytes, found 30002. No flag, value or path is that long" +
                std::string(kHelpHint));
}

// File arguments are checked for their type when they are read (from a flag or the file):
// a FIFO as --metrics-file or --resume made rank 0 wait for its other end forever, a file
// as --checkpoint-dir failed only at the first checkpoint. A path that does not exist is
// fine: an output is created, and ranks other than 0 need not mount the volume.
TEST_F(TrainConfigTest, FileArgumentsAreCheckedForTheirType) {
  const auto fifo = (dir_ / "fifo").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto file = writeFile("file", "x");
  const auto dir = dir_.string();
  EXPECT_EQ(configErrorOf({"--metrics-file", fifo}),
            "metrics-file: expected a regular file or /dev/null (or a path to create), found a "
            "FIFO (named pipe) at '" +
                fifo + "' (from --metrics-file)" + kHelpHint);
  EXPECT_EQ(configErrorOf({"--metrics-file", dir}),
            "metrics-file: expected a regular file or /dev/null (or a path to create), found a "
            "directory at '" +
                dir + "' (from --metrics-file)" + kHelpHint);
  EXPECT_EQ(configErrorOf({"--checkpoint-dir", file}),
            "checkpoint-dir: expected a directory (or a path to create), found a regular file "
            "at '" +
                file + "' (from --checkpoint-dir)" + kHelpHint);
  const auto yaml = writeFile("resume.yaml", "resume: " + fifo + "\n");
  EXPECT_EQ(configErrorOf({"--config", yaml}),
            "resume: expected auto, none or a regular file, found a FIFO (named pipe) at '" + fifo +
                "' (from " + yaml + ":1)" + kHelpHint);
  EXPECT_EQ(configErrorOf({"--config", fifo}),
            "--config '" + fifo +
                "': expected a YAML file, found a FIFO (named pipe). Pass the path of the file.");
  const auto fine = parse({"--metrics-file", "/dev/null", "--checkpoint-dir", dir + "/new",
                           "--resume", dir + "/missing.pt", "--checkpoint-dir", dir});
  EXPECT_EQ(fine.config.trainer.resume, dir + "/missing.pt");
}

// Seconds become milliseconds, and a deadline the steady clock's nanoseconds: the old bound
// (INT64_MAX / 1000 s) passed values that wrapped there into a deadline in the past.
TEST_F(TrainConfigTest, TimeoutsAreBoundedInSeconds) {
  for (const char* option : {"rdzv-timeout", "collective-timeout"}) {
    EXPECT_EQ(configErrorOf({std::string("--") + option, "9223372036854775"}),
              std::string(option) + ": expected an integer in [0, 604800], found " +
                  "'9223372036854775' (from --" + option + ")" + kHelpHint);
  }
  EXPECT_EQ(parse({"--collective-timeout", "604800"}).config.init.collectiveTimeout,
            std::chrono::hours(24 * 7));
}

// Once these ended in SIGABRT (an uncaught yaml-cpp conversion; a directory read as a
// stream), and after the single catch in main in exit 200, as if a retry could help.
TEST_F(TrainConfigTest, ComplexKeysAndDirectoriesAreConfigErrors) {
  const auto complex = writeFile("complex.yaml", "? [a]\n: 1\n");
  EXPECT_EQ(configErrorOf({"--config", complex}),
            complex +
                ":1: expected an option name as the key, found a list. Keys are the long "
                "flag names without '--'.");
  EXPECT_EQ(configErrorOf({"--config", dir_.string()}),
            "--config '" + dir_.string() +
                "': expected a YAML file, found a directory. Pass the path of the file.");
}

TEST_F(TrainConfigTest, ConfigFileMustBeAReadableMapping) {
  const auto list = writeFile("list.yaml", "- lr\n- epochs\n");
  EXPECT_EQ(configErrorOf({"--config", list}),
            "--config '" + list +
                "': expected a mapping of option: value, found a list. Write one `option: value` a "
                "line (as --print-config writes them).");
  const auto scalar = writeFile("scalar.yaml", "just some text\n");
  EXPECT_EQ(
      configErrorOf({"--config", scalar}),
      "--config '" + scalar +
          "': expected a mapping of option: value, found a scalar. Write one `option: value` a "
          "line (as --print-config writes them).");
  const auto missing = (dir_ / "missing.yaml").string();
  EXPECT_EQ(configErrorOf({"--config", missing}),
            "--config '" + missing +
                "': expected a YAML file, found nothing that can be read (No such file or "
                "directory). Pass the path of the file.");
  const auto broken = writeFile("broken.yaml", "lr: [0.1\n");
  EXPECT_EQ(
      configErrorOf({"--config", broken}).rfind("--config '" + broken + "': not valid YAML: ", 0),
      0u)
      << configErrorOf({"--config", broken});
  // An empty file changes nothing.
  const auto empty = writeFile("empty.yaml", "");
  const auto c = parse({"--config", empty}).config;
  EXPECT_EQ(toYaml(c), toYaml(parse({}).config));
  EXPECT_EQ(c.sources.at("lr"), "default");
}

TEST_F(TrainConfigTest, ToYamlLoadedWithConfigGivesTheSameYaml) {
  const auto first = parse({"--model",
                            "gpt",
                            "--gpt-heads",
                            "8",
                            "--data",
                            "text",
                            "--data-path",
                            "/data/shakespeare.txt",
                            "--test-fraction",
                            "0.1",
                            "--epochs",
                            "7",
                            "--max-steps",
                            "300",
                            "--batch-size",
                            "16",
                            "--grad-accumulation",
                            "4",
                            "--optimizer",
                            "adamw",
                            "--lr",
                            "0.0003",
                            "--weight-decay",
                            "0.01",
                            "--beta2",
                            "0.95",
                            "--lr-schedule",
                            "cosine",
                            "--warmup-steps",
                            "20",
                            "--min-lr-ratio",
                            "0.1",
                            "--clip-grad-norm",
                            "1",
                            "--seed",
                            "3",
                            "--shuffle=false",
                            "--drop-last",
                            "--eval-every",
                            "50",
                            "--metrics-file",
                            "/tmp/metrics.jsonl",
                            "--log-level",
                            "debug",
                            "--checkpoint-dir",
                            "/ckpt",
                            "--checkpoint-every",
                            "100",
                            "--keep-checkpoints",
                            "2",
                            "--resume",
                            "none",
                            "--bucket-cap-mb",
                            "0.5",
                            "--find-unused-parameters",
                            "--broadcast-buffers=false",
                            "--grad-compression",
                            "fp16",
                            "--backend",
                            "gloo",
                            "--device",
                            "cpu",
                            "--rdzv-timeout",
                            "60",
                            "--collective-timeout",
                            "600",
                            "--threads",
                            "2"})
                         .config;
  const auto yaml = toYaml(first);
  const auto file = writeFile("resolved.yaml", yaml);
  const auto second = parse({"--config", file}).config;
  EXPECT_EQ(toYaml(second), yaml);
  // Spot checks that the file carried the values, not the defaults.
  EXPECT_EQ(second.model, "gpt");
  EXPECT_EQ(second.dataPath, "/data/shakespeare.txt");
  EXPECT_DOUBLE_EQ(second.trainer.optimizer.lr, 0.0003);
  EXPECT_EQ(second.trainer.metricsFile, "/tmp/metrics.jsonl");
  EXPECT_EQ(second.trainer.resume, "none");
  EXPECT_EQ(second.trainer.ddp.bucketCapBytes, 524288);
  EXPECT_EQ(second.init.collectiveTimeout->count(), 600000);
  EXPECT_EQ(second.sources.at("lr"), file + ":17");
  // One line per option, every source the file.
  const auto entries = yamlEntries(yaml);
  EXPECT_EQ(entries.size(), second.sources.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(second.sources.at(entries[i].first), file + ":" + std::to_string(i + 1));
  }
  // The defaults round-trip too.
  const auto defaults = writeFile("defaults.yaml", toYaml(parse({}).config));
  EXPECT_EQ(toYaml(parse({"--config", defaults}).config), toYaml(parse({}).config));
}

TEST_F(TrainConfigTest, HelpListsEveryOptionWithItsDefault) {
  // cxxopts wraps long descriptions: compare with runs of whitespace collapsed.
  const auto help = std::regex_replace(helpText(), std::regex(R"(\s+)"), " ");
  const auto defaults = yamlEntries(toYaml(parse({}).config));
  ASSERT_FALSE(defaults.empty());
  for (auto [key, value] : defaults) {
    if (value.size() >= 2 && value.front() == '"') value = value.substr(1, value.size() - 2);
    if (value.empty()) value = "\"\"";
    const auto at = help.find(" --" + key + " ");
    ASSERT_NE(at, std::string::npos) << "--" << key << " missing from:\n" << helpText();
    const auto next = help.find(" --", at + 3);
    const auto entry = help.substr(at, next == std::string::npos ? std::string::npos : next - at);
    EXPECT_NE(entry.find("(default: " + value + ")"), std::string::npos)
        << "--" << key << " should say (default: " << value << "): '" << entry << "'";
  }
  for (const char* other : {" --config ", " --print-config ", " --version ", " -h, --help "}) {
    EXPECT_NE(help.find(other), std::string::npos) << other;
  }
}

// toYaml (examples/ddptrain/train_config.cpp) once had these bugs:
// doubles are printed with "{:g}", six significant digits, and bucket sizes go through
// bytes and back, so a resolved configuration (--print-config, a checkpoint's config)
// does not reproduce the run, and bucket-cap-mb drifts on every round trip.
TEST_F(TrainConfigTest, ToYamlKeepsEveryDigit) {
  const auto first = parse({"--lr", "0.00012345678", "--bucket-cap-mb", "0.3"}).config;
  const auto file = writeFile("digits.yaml", toYaml(first));
  const auto second = parse({"--config", file}).config;
  EXPECT_EQ(second.trainer.optimizer.lr, 0.00012345678);  // 0.000123457
  EXPECT_EQ(second.trainer.ddp.bucketCapBytes, first.trainer.ddp.bucketCapBytes);
  const auto again = writeFile("again.yaml", toYaml(second));
  EXPECT_EQ(toYaml(parse({"--config", again}).config), toYaml(second));  // 0.299999 -> 0.299998
}

// Once: strings were put in double quotes unescaped, so a backslash starts a YAML
// escape ("\n" comes back as a newline) and a '"' makes the file unreadable.
TEST_F(TrainConfigTest, ToYamlEscapesStrings) {
  for (const std::string path : {"/tmp/a\\nb", "/tmp/say\"hi\""}) {
    const auto first = parse({"--metrics-file", path}).config;
    const auto file = writeFile("strings.yaml", toYaml(first));
    const auto error = configErrorOf({"--config", file});
    EXPECT_EQ(error, "no exception") << path;
    if (error == "no exception") {
      EXPECT_EQ(parse({"--config", file}).config.trainer.metricsFile, path);
    }
  }
}

}  // namespace
}  // namespace ddptrain
