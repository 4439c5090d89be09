// ddptrain's command line and --config file under random input (tests/support/fuzz.h):
// every input is accepted or is a ConfigError (never a crash, a hang, or yaml-cpp's,
// cxxopts' or the standard library's own exception), and what is accepted survives the
// round trip through toYaml and --config unchanged (Note [Configuration precedence]).
#include "examples/ddptrain/train_config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "tests/support/fuzz.h"

namespace ddptrain {
namespace {

namespace fs = std::filesystem;
namespace fuzz = ddp::testing::fuzz;

class TrainConfigFuzzTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ddprun_train_config_fuzz_" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "a-directory");
    ::mkfifo((dir_ / "a-fifo").c_str(), 0600);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string writeFile(const std::string& stem, const std::string& text) const {
    return fuzz::writeInputFile(dir_.string(), stem, text);
  }

  // Parses, then checks the round trip: toYaml loaded with --config gives the same YAML.
  void parseAndRoundTrip(const std::vector<std::string>& args) const {
    std::vector<const char*> argv{"ddptrain"};
    for (const auto& a : args) argv.push_back(a.c_str());
    const auto parsed = parseCommandLine(static_cast<int>(argv.size()), argv.data());
    const std::string yaml = toYaml(parsed.config);
    const std::string reloaded = writeFile("reloaded", yaml);
    const char* again[] = {"ddptrain", "--config", reloaded.c_str()};
    std::string roundTrip;
    try {
      roundTrip = toYaml(parseCommandLine(3, again).config);
    } catch (const ddp::ConfigError& e) {
      throw std::logic_error(std::string("toYaml wrote a file --config refuses: ") + e.what());
    }
    if (roundTrip != yaml) {
      throw std::logic_error("toYaml -> --config -> toYaml changed:\n" + yaml + "into\n" +
                             roundTrip);
    }
  }

  fs::path dir_;
};

TEST_F(TrainConfigFuzzTest, EveryConfigFileIsAcceptedOrIsAConfigError) {
  std::vector<std::string> corpus = {
      toYaml(TrainConfig{}),  // every key, as ddptrain writes them
      "model: gpt\ndata: text\nblock-size: 32\ngpt-layers: 2\nlr: 3e-4\nepochs: &e 3\n"
      "eval-every: *e\nshuffle: yes\nrdzv-timeout: 30\nbucket-cap-mb: 0.5\n",
      "{model: mlp, epochs: 2, data-path: \"/tmp/x\\u00e9\", seed: 18446744073709551615}\n",
      "---\n# a comment\nbatch-size: 64 # trailing\n...\n",
      "? [a]\n: 1\n",
      "optimizer: !!str adam\nresume: 'auto'\nmetrics-file: |\n  line\n",
  };
  std::vector<std::string> dictionary = {": ",
                                         "\n",
                                         "&a ",
                                         "*a",
                                         "? ",
                                         "- ",
                                         "[",
                                         "]",
                                         "{",
                                         "}",
                                         "!!str ",
                                         "!!binary ",
                                         "!!map ",
                                         "|\n  ",
                                         ">-\n  ",
                                         "---\n",
                                         "...\n",
                                         "%YAML 1.2\n",
                                         "%TAG ! tag:x,2000:\n",
                                         "\"",
                                         "'",
                                         "\\u0000",
                                         "\\x00",
                                         "<<: ",
                                         "~",
                                         "null",
                                         "#",
                                         "  ",
                                         "\t",
                                         ",",
                                         "!<tag:x> "};
  const std::string yaml = toYaml(TrainConfig{});
  for (std::size_t at = 0; at < yaml.size();) {  // every key
    const std::size_t colon = yaml.find(':', at);
    dictionary.push_back(yaml.substr(at, colon + 2 - at));
    at = yaml.find('\n', colon) + 1;
  }
  fuzz::Target target{"ddptrain_yaml", corpus, dictionary};
  target.maxInputBytes = 8192;
  target.parse = [this](const std::string& input) {
    parseAndRoundTrip({"--config", writeFile("config", input)});
  };
  fuzz::runAndExpectNoFindings(target, 4000);
}

TEST_F(TrainConfigFuzzTest, EveryCommandLineIsAcceptedOrIsAConfigError) {
  // One argument a line.
  const std::vector<std::string> corpus = {
      "--model\nmlp\n--epochs\n3\n--batch-size=32\n--lr\n0.1\n--bucket-cap-mb\n25\n"
      "--rdzv-timeout\n30\n--shuffle\n--data\ncsv\n--data-path\n/x.csv",
      "--model=gpt\n--gpt-heads=2\n--gpt-embedding=64\n--block-size=16\n--seed=7\n"
      "--collective-timeout=600\n--grad-compression=bf16\n--threads=2\n--print-config",
      "--keep-checkpoints\n5\n--checkpoint-dir\n/tmp/c\n--resume\nnone\n--drop-last=false\n"
      "--grad-accumulation\n4\n--max-steps\n100\n--test-fraction\n0.25",
  };
  std::vector<std::string> dictionary = {"\n",
                                         "=",
                                         "-",
                                         "--",
                                         "--config\n" + (dir_ / "a-directory").string(),
                                         "--config\n" + (dir_ / "a-fifo").string(),
                                         "--config\n/nonexistent.yaml",
                                         "--help\n",
                                         "--version\n"};
  const std::string yaml = toYaml(TrainConfig{});
  for (std::size_t at = 0; at < yaml.size();) {
    const std::size_t colon = yaml.find(':', at);
    dictionary.push_back("--" + yaml.substr(at, colon - at) + "\n");
    at = yaml.find('\n', colon) + 1;
  }
  fuzz::Target target{"ddptrain_flags", corpus, dictionary};
  target.parse = [this](const std::string& input) {
    std::vector<std::string> args;
    for (std::size_t at = 0; at <= input.size();) {
      const std::size_t end = std::min(input.find('\n', at), input.size());
      args.push_back(input.substr(at, end - at));
      at = end + 1;
    }
    parseAndRoundTrip(args);
  };
  fuzz::runAndExpectNoFindings(target, 4000);
}

}  // namespace
}  // namespace ddptrain
