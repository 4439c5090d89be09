// The launcher's flag table: which words take a value (derived from the table), and each
// flag's fallback to its variable, with the flag winning.
#include "launcher/launch_flags.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace ddp::launcher {
namespace {

TEST(LaunchFlagsTest, ValueTakingFlagsComeFromTheTable) {
  for (const char* arg : {"--nproc-per-node",
                          "--nproc_per_node",
                          "--nnodes",
                          "--node_rank",
                          "--master-addr",
                          "--master_port",
                          "--max-restarts",
                          "--rdzv-timeout",
                          "--backend",
                          "--grace-period",
                          "--log-dir",
                          "--log_dir",
                          "--redirects",
                          "-r",
                          "--tee",
                          "-t",
                          "--local-ranks-filter",
                          "--local_ranks_filter",
                          "--log-line-prefix-template",
                          "--error-file",
                          "--log-level"}) {
    EXPECT_TRUE(flagTakesValue(arg)) << arg;
  }
  for (const char* arg : {"--standalone", "--dry-run", "--help", "--version", "train.py", "-x"}) {
    EXPECT_FALSE(flagTakesValue(arg)) << arg;
  }
  for (const auto& spec : launchFlagSpecs()) {
    EXPECT_EQ(flagTakesValue("--" + spec.name), !spec.valueName.empty()) << spec.name;
  }
}

TEST(LaunchFlagsTest, EveryTorchrunFlagFallsBackToItsPetVariable) {
  for (const char* name : {"nproc-per-node", "nnodes", "node-rank", "master-addr", "master-port",
                           "standalone", "max-restarts", "log-dir", "redirects", "tee",
                           "local-ranks-filter", "log-line-prefix-template"}) {
    bool found = false;
    for (const auto& spec : launchFlagSpecs()) {
      if (spec.name != name) continue;
      found = true;
      std::string pet = "PET_" + spec.name;
      for (auto& c : pet) c = c == '-' ? '_' : static_cast<char>(std::toupper(c));
      EXPECT_EQ(spec.variable, pet) << name;
    }
    EXPECT_TRUE(found) << name;
  }
}

TEST(LaunchFlagsTest, TheFlagWinsOverItsVariable) {
  const env::EnvMap env{{"PET_MAX_RESTARTS", "3"},
                        {"PET_LOG_DIR", "/logs"},
                        {"PET_REDIRECTS", "1"},
                        {"DDPRUN_ERROR_FILE", "/dev/termination-log"}};
  const auto fromEnv = readLaunchCommand({}, env);
  EXPECT_EQ(fromEnv.plan.maxRestarts, 3);
  EXPECT_EQ(fromEnv.plan.maxRestartsOrigin, "PET_MAX_RESTARTS");
  EXPECT_EQ(fromEnv.logDir, "/logs");
  EXPECT_EQ(fromEnv.redirects.allRanks, 1);
  EXPECT_EQ(fromEnv.errorFile, "/dev/termination-log");
  EXPECT_EQ(fromEnv.origins.at("log-dir"), "PET_LOG_DIR");

  const auto fromFlags = readLaunchCommand(
      {{"max-restarts", "1"}, {"log-dir", "/mine"}, {"redirects", "0"}, {"error-file", "e.json"}},
      env);
  EXPECT_EQ(fromFlags.plan.maxRestarts, 1);
  EXPECT_EQ(fromFlags.plan.maxRestartsOrigin, "--max-restarts");
  EXPECT_EQ(fromFlags.logDir, "/mine");
  EXPECT_FALSE(fromFlags.redirects.any());
  EXPECT_EQ(fromFlags.errorFile, "e.json");
}

// torchrun's output flags: --redirects/--tee as a value or per local rank, the console
// filter, the prefix template (then TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE, as torchrun).
TEST(LaunchFlagsTest, OutputFlagsTakeTorchrunsSyntax) {
  const auto command = readLaunchCommand(
      {{"redirects", "0:1,1:2"}, {"tee", "3"}, {"local-ranks-filter", "0,2"}}, {});
  EXPECT_TRUE(command.redirects.includes(0, Stream::kStdout));
  EXPECT_FALSE(command.redirects.includes(0, Stream::kStderr));
  EXPECT_TRUE(command.redirects.includes(1, Stream::kStderr));
  EXPECT_EQ(command.tee.allRanks, 3);
  EXPECT_EQ(command.localRanksFilter, std::set<int>({0, 2}));
  EXPECT_TRUE(command.errorFile.empty());  // main.cpp puts it in the run's log directory

  const auto fromEnv =
      readLaunchCommand({}, {{"PET_TEE", "0:3"},
                             {"PET_LOCAL_RANKS_FILTER", "1"},
                             {"TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE", "${rank}|"}});
  EXPECT_TRUE(fromEnv.tee.includes(0, Stream::kStderr));
  EXPECT_FALSE(fromEnv.tee.includes(1, Stream::kStderr));
  EXPECT_EQ(fromEnv.localRanksFilter, std::set<int>({1}));
  EXPECT_EQ(fromEnv.linePrefixTemplate, "${rank}|");
  EXPECT_EQ(fromEnv.origins.at("log-line-prefix-template"),
            "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE");
  const auto petWins = readLaunchCommand({}, {{"PET_LOG_LINE_PREFIX_TEMPLATE", "[${local_rank}]"},
                                              {"TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE", "x"}});
  EXPECT_EQ(petWins.linePrefixTemplate, "[${local_rank}]");
}

TEST(LaunchFlagsTest, BadOutputFlagsSayWhatWasExpected) {
  auto errorOf = [](const GivenFlags& given, const env::EnvMap& env) {
    try {
      readLaunchCommand(given, env);
    } catch (const LaunchError& e) {
      return std::string(e.what());
    }
    return std::string("no LaunchError");
  };
  EXPECT_EQ(errorOf({{"tee", "4"}}, {}),
            "--tee=4: expected 0 (none), 1 (stdout), 2 (stderr), 3 (both), or per local rank as "
            "0:1,1:2; found '4'. Run 'ddprun --help' for the flags.");
  EXPECT_EQ(errorOf({}, {{"PET_REDIRECTS", "0:1,0:2"}}),
            "PET_REDIRECTS=0:1,0:2: expected 0 (none), 1 (stdout), 2 (stderr), 3 (both), or per "
            "local rank as 0:1,1:2; found '0:1,0:2'. Fix PET_REDIRECTS where it is set (pod spec "
            "or shell), or pass the flag.");
  EXPECT_NE(errorOf({{"local-ranks-filter", "0,,1"}}, {})
                .find("--local-ranks-filter=0,,1: expected local ranks separated by commas, "
                      "such as 0 or 0,1,2; found ''"),
            std::string::npos);
  EXPECT_NE(errorOf({{"local-ranks-filter", "x"}}, {}).find("found 'x'"), std::string::npos);
}

TEST(LaunchFlagsTest, NodeVariablesAreLeftToTheNodeView) {
  // PET_NNODES is read (and cross-checked) by env::resolveNodeEnv, not here.
  const auto command = readLaunchCommand({}, {{"PET_NNODES", "4"}, {"DDPRUN_LOG_LEVEL", "debug"}});
  EXPECT_FALSE(command.plan.nnodes.has_value());
  EXPECT_FALSE(command.logLevel.has_value());
}

TEST(LaunchFlagsTest, PetStandaloneEmptyMeansOn) {
  EXPECT_TRUE(readLaunchCommand({}, {{"PET_STANDALONE", ""}}).plan.standalone);
  EXPECT_TRUE(readLaunchCommand({}, {{"PET_STANDALONE", "1"}}).plan.standalone);
  EXPECT_FALSE(readLaunchCommand({}, {{"PET_STANDALONE", "0"}}).plan.standalone);
  EXPECT_TRUE(readLaunchCommand({{"standalone", ""}}, {{"PET_STANDALONE", "0"}}).plan.standalone);
}

// One bound for every timeout (env::kMaxTimeoutSeconds): the launcher's --rdzv-timeout
// takes what the workers' DDPRUN_RDZV_TIMEOUT and ddptrain's --rdzv-timeout take.
TEST(LaunchFlagsTest, RendezvousTimeoutHasTheBoundOfEveryTimeout) {
  EXPECT_EQ(readLaunchCommand({{"rdzv-timeout", "604800"}}, {}).rendezvousTimeoutSeconds, 604800);
  try {
    readLaunchCommand({{"rdzv-timeout", "604801"}}, {});
    FAIL() << "--rdzv-timeout=604801 was accepted";
  } catch (const LaunchError& e) {
    EXPECT_EQ(std::string(e.what()),
              "--rdzv-timeout=604801: expected a decimal integer in [0, 604800]; found 604801, "
              "which is above 604800. Run 'ddprun --help' for the flags.");
  }
}

// The message of the LaunchError that reading `given` and `env` throws.
std::string launchErrorOf(const GivenFlags& given, const env::EnvMap& env) {
  try {
    readLaunchCommand(given, env);
  } catch (const LaunchError& e) {
    return e.what();
  }
  return "no LaunchError";
}

// Output paths are checked for their type before anything starts: a FIFO as the error file
// made the launcher wait for a reader at the end of a failed run, and a file as the log
// directory failed only when the first worker started. A path that is not there yet is
// fine (it is created).
TEST(LaunchFlagsTest, OutputPathsAreCheckedForTheirType) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("launch_flags_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string fifo = (dir / "fifo").string();
  const std::string file = (dir / "file").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::ofstream(file) << "x";
  EXPECT_EQ(launchErrorOf({{"error-file", fifo}}, {}),
            "--error-file=" + fifo +
                ": expected a regular file or /dev/null (or a path to create); found a FIFO "
                "(named pipe). Run 'ddprun --help' for the flags.");
  EXPECT_EQ(launchErrorOf({{"error-file", dir.string()}}, {}),
            "--error-file=" + dir.string() +
                ": expected a regular file or /dev/null (or a path to create); found a "
                "directory. Run 'ddprun --help' for the flags.");
  EXPECT_EQ(launchErrorOf({}, {{"PET_LOG_DIR", file}}),
            "PET_LOG_DIR=" + file +
                ": expected a directory (or a path to create); found a regular file. Fix "
                "PET_LOG_DIR where it is set (pod spec or shell), or pass the flag.");
  const auto fine =
      readLaunchCommand({{"error-file", "/dev/null"}, {"log-dir", (dir / "logs").string()}}, {});
  EXPECT_EQ(fine.errorFile, "/dev/null");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ddp::launcher
