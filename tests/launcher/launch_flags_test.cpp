// The launcher's flag table: which words take a value (derived from the table), and each
// flag's fallback to its variable, with the flag winning.
#include "launcher/launch_flags.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace ddp::launcher {
namespace {

// The message of the LaunchError that reading `given` and `env` throws.
std::string launchErrorOf(const GivenFlags& given, const env::EnvMap& env) {
  try {
    readLaunchCommand(given, env);
  } catch (const LaunchError& e) {
    return e.what();
  }
  return "no LaunchError";
}

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
                          "--error-file",
                          "--log-level",
                          "--python",
                          "--role",
                          "--start_method",
                          "--signals-to-handle",
                          "--shutdown-timeout",
                          "--rdzv-backend",
                          "--rdzv_endpoint",
                          "--rdzv-id",
                          "--rdzv-conf",
                          "--local-addr",
                          "--monitor-interval",
                          "--tee",
                          "-t",
                          "--local-ranks-filter",
                          "--local_ranks_filter",
                          "--log-line-prefix-template"}) {
    EXPECT_TRUE(flagTakesValue(arg)) << arg;
  }
  for (const char* arg : {"--standalone", "--dry-run", "--help", "--version", "train.py", "-x",
                          "-m", "--module", "--no-python", "--run_path", "--virtual-local-rank"}) {
    EXPECT_FALSE(flagTakesValue(arg)) << arg;
  }
  for (const auto& spec : launchFlagSpecs()) {
    EXPECT_EQ(flagTakesValue("--" + spec.name), !spec.valueName.empty()) << spec.name;
  }
}

// torchrun's own parser is the reference (tests/launcher/torchrun_flags_test.py); this
// checks the rule on the rows: a torchrun flag's variable, where it has one, is PET_<NAME>.
TEST(LaunchFlagsTest, EveryTorchrunFlagFallsBackToItsPetVariable) {
  int withVariable = 0;
  for (const auto& spec : launchFlagSpecs()) {
    if (spec.torchrun == TorchrunStatus::kNotTorchrun || spec.variable.empty()) continue;
    std::string pet = "PET_" + spec.name;
    for (auto& c : pet) c = c == '-' ? '_' : static_cast<char>(std::toupper(c));
    EXPECT_EQ(spec.variable, pet) << spec.name;
    ++withVariable;
  }
  EXPECT_GE(withVariable, 20);
}

// A row that ignores or refuses a torchrun flag says why (--help and README show it).
TEST(LaunchFlagsTest, IgnoredAndRefusedFlagsSayWhy) {
  for (const auto& spec : launchFlagSpecs()) {
    if (spec.torchrun == TorchrunStatus::kIgnored || spec.torchrun == TorchrunStatus::kRefused) {
      EXPECT_FALSE(spec.torchrunNote.empty()) << spec.name;
    }
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

TEST(LaunchFlagsTest, SwitchesFallBackToTheirVariablesAsTorchrunReadsThem) {
  const auto command = readLaunchCommand({}, {{"PET_MODULE", "1"},
                                              {"PET_NO_PYTHON", "0"},
                                              {"PET_RUN_PATH", ""},
                                              {"PET_VIRTUAL_LOCAL_RANK", "1"}});
  EXPECT_TRUE(command.program.module);
  EXPECT_FALSE(command.program.noPython);
  EXPECT_TRUE(command.program.runPath);
  EXPECT_TRUE(command.virtualLocalRank);
  EXPECT_TRUE(readLaunchCommand({{"no-python", ""}}, {{"PET_NO_PYTHON", "0"}}).program.noPython);
  EXPECT_EQ(launchErrorOf({}, {{"PET_MODULE", "yes"}}),
            "PET_MODULE=yes: expected empty, 0 or 1; found 'yes'. Fix PET_MODULE where it is set "
            "(pod spec or shell), or pass the flag.");
}

TEST(LaunchFlagsTest, PythonAndRoleComeFromTheFlagOrTheirVariable) {
  const auto fromEnv =
      readLaunchCommand({}, {{"PYTHON_EXEC", "/opt/py/bin/python"}, {"PET_ROLE", "trainer"}});
  EXPECT_EQ(fromEnv.program.python, "/opt/py/bin/python");
  EXPECT_EQ(fromEnv.program.pythonOrigin, "PYTHON_EXEC");
  EXPECT_EQ(fromEnv.role, "trainer");
  const auto fromFlags = readLaunchCommand({{"python", "python3.11"}, {"role", "eval"}},
                                           {{"PYTHON_EXEC", "/opt/py/bin/python"}});
  EXPECT_EQ(fromFlags.program.python, "python3.11");
  EXPECT_EQ(fromFlags.program.pythonOrigin, "--python");
  EXPECT_EQ(fromFlags.role, "eval");
  EXPECT_EQ(readLaunchCommand({}, {}).role, "default");
  EXPECT_FALSE(readLaunchCommand({}, {}).program.python.has_value());
  EXPECT_EQ(launchErrorOf({{"role", ""}}, {}),
            "--role=: expected a role name (ROLE_NAME); found an empty value. Run 'ddprun "
            "--help' for the flags.");
}

// Note [torchrun's flags]: torchrun's default is accepted silently; another value of an
// ignored flag is logged, of a refused one is an error that names the flag and the reason.
TEST(LaunchFlagsTest, IgnoredFlagsAreReportedAndRefusedOnesAreErrors) {
  EXPECT_TRUE(readLaunchCommand({{"start-method", "spawn"}, {"duplicate-stdout-filters", ""}}, {})
                  .ignoredFlags.empty());
  const auto ignored =
      readLaunchCommand({{"start-method", "fork"}}, {{"PET_EVENT_LOG_HANDLER", "console"}});
  ASSERT_EQ(ignored.ignoredFlags.size(), 2u);
  EXPECT_EQ(ignored.ignoredFlags[0],
            "--start-method=fork: accepted and ignored: every worker is a new process (fork, then "
            "exec of PROGRAM); the methods differ only for workers made from torchrun's own "
            "Python");
  EXPECT_EQ(ignored.ignoredFlags[1].substr(0, 52),
            "PET_EVENT_LOG_HANDLER=console: accepted and ignored:");
  EXPECT_EQ(launchErrorOf({{"start-method", "thread"}}, {}),
            "--start-method=thread: expected spawn, fork or forkserver; found 'thread'. Run "
            "'ddprun --help' for the flags.");
  EXPECT_EQ(launchErrorOf({{"numa-binding", "node"}}, {}),
            "--numa-binding=node: torchrun's --numa-binding is not supported by ddprun: not "
            "implemented; bind in the program or with numactl, or let the kubelet's CPU manager "
            "place the pod. Drop it (README, 'torchrun's flags', lists what ddprun does with each "
            "of them).");
  EXPECT_NE(launchErrorOf({}, {{"PET_DUPLICATE_STDERR_FILTERS", "nan"}})
                .find("PET_DUPLICATE_STDERR_FILTERS=nan: torchrun's --duplicate-stderr-filters "
                      "is not supported by ddprun"),
            std::string::npos);
}

// The rendezvous settings of the c10d backend were dropped without a word under the static
// one, and a misspelt --rdzv-conf key there went unnoticed.
TEST(LaunchFlagsTest, RendezvousSettingsUnderTheStaticBackendAreCheckedAndSaidToBeIgnored) {
  const auto command =
      readLaunchCommand({{"local-addr", "10.0.0.5"}, {"rdzv-conf", "join_timeout=5"}},
                        {{"PET_MONITOR_INTERVAL", "1"}});
  ASSERT_EQ(command.ignoredFlags.size(), 3u);
  EXPECT_EQ(command.ignoredFlags[0],
            "--rdzv-conf=join_timeout=5: accepted and ignored: it only matters with "
            "--rdzv-backend c10d (the static backend has no rendezvous rounds)");
  EXPECT_EQ(command.ignoredFlags[1].substr(0, 43), "--local-addr=10.0.0.5: accepted and ignored");
  EXPECT_EQ(command.ignoredFlags[2].substr(0, 45), "PET_MONITOR_INTERVAL=1: accepted and ignored:");
  EXPECT_NE(launchErrorOf({{"rdzv-conf", "join_timout=5"}}, {}).find("join_timout"),
            std::string::npos);
  EXPECT_TRUE(readLaunchCommand({{"rdzv-backend", "c10d"},
                                 {"rdzv-endpoint", "127.0.0.1:29400"},
                                 {"local-addr", "127.0.0.1"}},
                                {})
                  .ignoredFlags.empty());
}

TEST(LaunchFlagsTest, ShutdownTimeoutIsTorchrunsNameForTheGracePeriod) {
  EXPECT_EQ(readLaunchCommand({}, {}).gracePeriodSeconds, 30);
  EXPECT_EQ(readLaunchCommand({{"shutdown-timeout", "7"}}, {}).gracePeriodSeconds, 7);
  EXPECT_EQ(readLaunchCommand({}, {{"PET_SHUTDOWN_TIMEOUT", "9"}}).gracePeriodSeconds, 9);
  EXPECT_EQ(readLaunchCommand({{"grace-period", "5"}}, {{"PET_SHUTDOWN_TIMEOUT", "9"}})
                .gracePeriodSeconds,
            5);
  EXPECT_EQ(launchErrorOf({{"grace-period", "5"}, {"shutdown-timeout", "9"}}, {}),
            "--grace-period=5 and --shutdown-timeout=9 are one setting (torchrun calls it "
            "--shutdown-timeout) with two values. Give one of them.");
}

TEST(LaunchFlagsTest, SignalsToHandleAreTorchrunsListOfNames) {
  EXPECT_EQ(readLaunchCommand({}, {}).signalsToHandle,
            (std::vector<int>{SIGTERM, SIGINT, SIGHUP, SIGQUIT}));
  EXPECT_EQ(
      readLaunchCommand({{"signals-to-handle", "SIGUSR1,SIGTERM,SIGUSR1"}}, {}).signalsToHandle,
      (std::vector<int>{SIGUSR1, SIGTERM}));
  EXPECT_EQ(launchErrorOf({}, {{"PET_SIGNALS_TO_HANDLE", "SIGTERM,SIGKILL"}}),
            "PET_SIGNALS_TO_HANDLE=SIGTERM,SIGKILL: expected a comma-separated list of SIGHUP, "
            "SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGXCPU, SIGPWR; found "
            "'SIGKILL'. Fix PET_SIGNALS_TO_HANDLE where it is set (pod spec or shell), or pass "
            "the flag.");
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
