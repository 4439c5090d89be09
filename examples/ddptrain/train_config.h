// ddptrain's configuration: every option is a flag and a key of a YAML file (the same
// name: `--batch-size 64` or `batch-size: 64`).
//
// Note [Configuration precedence]
//   built-in default  <  the --config YAML file  <  flags on the command line
// Every value, from any source, goes through the same parser, so a bad value gets the
// same error wherever it came from, naming the option, the value, what was expected and
// where it was found (flag, or file:line). Unknown keys in the file are errors too.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/distributed.h"
#include "runtime/train/trainer.h"

namespace ddptrain {

struct TrainConfig {
  std::string model = "cnn";  // one of models::modelNames()
  std::int64_t gptLayers = 2;
  std::int64_t gptHeads = 4;
  std::int64_t gptEmbedding = 128;

  std::string data = "idx";  // one of data::datasetKinds()
  std::string dataPath = "/usr/share/datasets/fashion-mnist";
  double testFraction = 0.2;
  std::int64_t blockSize = 64;
  std::int64_t syntheticSamples = 4096;

  ddp::train::TrainerOptions trainer;
  ddp::InitOptions init;
  int threads = 0;  // 0: OMP_NUM_THREADS or torch's default
  std::string logLevel = "info";

  std::string configFile;  // the YAML file read, "" if none
  // Where each option's value came from: "default", "--flag" or "file:line".
  std::map<std::string, std::string> sources;
};

struct ParsedCommandLine {
  TrainConfig config;
  bool help = false;         // --help: print helpText() and exit 0
  bool version = false;      // --version
  bool printConfig = false;  // --print-config: print toYaml(config) and exit 0
};

// Throws ddp::ConfigError (exit code 2) for an unknown flag or key, a bad value, or an
// unreadable config file.
ParsedCommandLine parseCommandLine(int argc, const char* const* argv);

// --help: every option with its default and meaning.
std::string helpText();

// The resolved configuration as YAML (every option, one per line), loadable with --config.
std::string toYaml(const TrainConfig& config);

}  // namespace ddptrain
