// The watchdog (runtime/health/watchdog.h) end to end: ddptrain ranks on loopback (Gloo),
// with and without ddprun, one rank made to stop, stall or desync; every other rank must
// end within the bound, and the report must name the culprit, where it stood and why.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/exit_codes.h"
#include "tests/support/subprocess.h"

namespace ddp::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Args = std::vector<std::string>;
using Clock = std::chrono::steady_clock;

class WatchdogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("watchdog_test_{}_{}", getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // 3 ranks under ddprun of a long synthetic run checkpointing every 100 steps.
  std::unique_ptr<ChildProcess> startJob(const Args& ddprunArgs,
                                         const std::map<std::string, std::string>& env = {}) {
    Args argv{DDPRUN_BINARY, "--standalone", "--nproc-per-node",
              "3",           "--error-file", (dir_ / "error.json").string()};
    argv.insert(argv.end(), ddprunArgs.begin(), ddprunArgs.end());
    for (const auto& a : {"--", DDPTRAIN_BINARY, "--model", "mlp", "--data", "synthetic",
                          "--epochs", "1000", "--log-every", "50", "--checkpoint-every", "100"}) {
      argv.push_back(a);
    }
    argv.push_back("--checkpoint-dir");
    argv.push_back((dir_ / "checkpoints").string());
    auto merged = env;
    merged["OMP_NUM_THREADS"] = "1";
    return std::make_unique<ChildProcess>(argv, merged);
  }

  nlohmann::json report() const {
    std::ifstream in(dir_ / "error.json");
    return nlohmann::json::parse(in, nullptr, false);
  }

  // The pids of the job's ddptrain processes (their command line names our directory).
  std::vector<pid_t> workers() const {
    std::vector<pid_t> pids;
    for (const auto& entry : fs::directory_iterator("/proc")) {
      const auto name = entry.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream in(entry.path() / "cmdline");
      std::string cmdline((std::istreambuf_iterator<char>(in)), {});
      // The program itself, not ddprun (whose arguments name ddptrain too): argv[0], which
      // may lie under a directory named ddprun (a clone).
      const auto program = fs::path(cmdline.substr(0, cmdline.find('\0'))).filename();
      if (program == "ddptrain" && cmdline.find(dir_.string()) != std::string::npos) {
        pids.push_back(std::stoi(name));
      }
    }
    std::sort(pids.begin(), pids.end());
    return pids;
  }

  bool waitForCheckpoint(std::chrono::seconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (fs::exists(dir_ / "checkpoints" / "checkpoint-00000100.pt.json")) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  fs::path dir_;
};

TEST_F(WatchdogTest, AStoppedRankIsFoundWithinTheDeathBoundAndNamedWithItsStacks) {
  auto job = startJob({});
  ASSERT_TRUE(waitForCheckpoint(120s));
  const auto pids = workers();
  ASSERT_EQ(pids.size(), 3u);
  const pid_t stopped = pids.back();  // the last started: rank 2
  const auto start = Clock::now();
  ::kill(stopped, SIGSTOP);
  auto result = job->wait(60s);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ASSERT_FALSE(result.timedOut) << result.output;
  // deadAfter (5 s) + a tick, then the launcher kills the stopped one at once.
  EXPECT_LT(seconds, 10.0) << result.output;
  EXPECT_NE(result.exitCode, 0) << result.output;
  EXPECT_NE(result.output.find("ddprun: watchdog: rank 2 "), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("is stopped"), std::string::npos) << result.output;
  const auto r = report();
  ASSERT_TRUE(r.is_object()) << result.output;
  EXPECT_EQ(r["rank"], 2) << r.dump(2);
  EXPECT_EQ(r["health"]["kind"], "dead") << r.dump(2);
  EXPECT_EQ(r["health"]["culprit"], 2) << r.dump(2);
  // Every reachable rank's flight records, from c10d's recorder.
  EXPECT_TRUE(r["health"]["flight_recorder"].contains("0")) << r.dump(2);
  EXPECT_TRUE(r["health"]["flight_recorder"].contains("1")) << r.dump(2);
  EXPECT_FALSE(r["health"]["flight_recorder"]["0"]["entries"].empty()) << r.dump(2);
  // The stopped rank's threads, taken by the launcher before it killed it.
  ASSERT_TRUE(r["stacks"].is_object()) << r.dump(2);
  EXPECT_NE(r["stacks"]["2"].get<std::string>().find("TID"), std::string::npos) << r.dump(2);
  // Its last heartbeat, older than the others'.
  EXPECT_GT(r["heartbeats"]["2"]["age_s"].get<double>(),
            r["heartbeats"]["0"]["age_s"].get<double>());
  EXPECT_TRUE(workers().empty());
  EXPECT_TRUE(fs::exists(dir_ / "checkpoints" / "checkpoint-00000100.pt"));
}

TEST_F(WatchdogTest, AStalledRankEndsTheJobWithinTheHangTimeoutNamingItAndWhereTheOthersWait) {
  const auto start = Clock::now();
  auto job = startJob({"--hang-timeout", "3"}, {{"DDPRUN_TEST_FAULT", "stall:1:150"}});
  auto result = job->wait(120s);
  ASSERT_FALSE(result.timedOut) << result.output;
  EXPECT_EQ(result.exitCode, kExitTransient) << result.output;
  const auto r = report();
  ASSERT_TRUE(r.is_object()) << result.output;
  EXPECT_EQ(r["rank"], 1) << r.dump(2);
  EXPECT_EQ(r["health"]["kind"], "hung") << r.dump(2);
  EXPECT_EQ(r["health"]["culprit"], 1) << r.dump(2);
  EXPECT_EQ(r["health"]["phase"], "forward-backward") << r.dump(2);
  EXPECT_EQ(r["health"]["step"], 149) << r.dump(2);
  const auto summary = r["health"]["summary"].get<std::string>();
  EXPECT_NE(summary.find("rank 1 stalled in forward-backward at step 149"), std::string::npos)
      << summary;
  EXPECT_NE(summary.find("ranks 0,2 wait in #"), std::string::npos) << summary;
  // The stalled rank's own watchdog took its stacks: the sleeping training thread is there.
  EXPECT_NE(r["stacks"]["1"].get<std::string>().find("nanosleep"), std::string::npos) << r.dump(2);
  // From the stall's line to the end: within the hang timeout + 10 s.
  const auto stalledAt = result.output.find("event=injected_fault kind=stall");
  ASSERT_NE(stalledAt, std::string::npos) << result.output;
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 120.0);
  EXPECT_TRUE(workers().empty());
  EXPECT_TRUE(fs::exists(dir_ / "checkpoints" / "checkpoint-00000100.pt"));
}

TEST_F(WatchdogTest, ADesyncEndsTheJobWithThePermanentCodeNamingBothCollectives) {
  auto job = startJob({}, {{"DDPRUN_TEST_FAULT", "desync:1:120"}});
  auto result = job->wait(120s);
  ASSERT_FALSE(result.timedOut) << result.output;
  EXPECT_EQ(result.exitCode, kExitDesync) << result.output;
  EXPECT_NE(result.output.find("not restarting"), std::string::npos) << result.output;
  const auto r = report();
  ASSERT_TRUE(r.is_object()) << result.output;
  EXPECT_EQ(r["health"]["kind"], "desync") << r.dump(2);
  const auto summary = r["health"]["summary"].get<std::string>();
  EXPECT_NE(summary.find("rank 1 issued allreduce Float[7]"), std::string::npos) << summary;
  EXPECT_NE(summary.find("rank 0 issued allreduce Float[235146]"), std::string::npos) << summary;
  EXPECT_TRUE(workers().empty());
}

// Without a launcher: the ranks themselves end within the death bound when one is stopped,
// each with kExitTransient and its verdict in its own error file.
TEST_F(WatchdogTest, RanksWithoutALauncherLeaveAStoppedPeerWithinTheDeathBound) {
  const auto port = std::to_string(findFreePort());
  std::vector<std::unique_ptr<ChildProcess>> ranks;
  for (int rank = 0; rank < 3; ++rank) {
    const auto errorFile = dir_ / fmt::format("error{}.json", rank);
    ranks.push_back(std::make_unique<ChildProcess>(
        Args{DDPTRAIN_BINARY, "--model", "mlp", "--data", "synthetic", "--epochs", "1000",
             "--log-every", "1000"},
        std::map<std::string, std::string>{{"RANK", std::to_string(rank)},
                                           {"WORLD_SIZE", "3"},
                                           {"LOCAL_RANK", std::to_string(rank)},
                                           {"LOCAL_WORLD_SIZE", "3"},
                                           {"MASTER_ADDR", "127.0.0.1"},
                                           {"MASTER_PORT", port},
                                           {"OMP_NUM_THREADS", "1"},
                                           {"TORCHELASTIC_ERROR_FILE", errorFile.string()}}));
  }
  std::this_thread::sleep_for(4s);  // well into training
  const auto start = Clock::now();
  ::kill(ranks[1]->pid(), SIGSTOP);
  for (int rank : {0, 2}) {
    auto result = ranks[rank]->wait(30s);
    EXPECT_FALSE(result.timedOut) << result.output;
    EXPECT_EQ(result.exitCode, kExitTransient) << result.output;
    std::ifstream in(dir_ / fmt::format("error{}.json", rank));
    const auto record = nlohmann::json::parse(in, nullptr, false);
    ASSERT_TRUE(record.is_object() && record.contains("message")) << result.output;
    const auto& extra = record["message"]["extraInfo"];
    EXPECT_EQ(extra["ddprun_health"]["culprit"], 1) << record.dump(2);
    EXPECT_EQ(extra["ddprun_peer_loss"], true) << record.dump(2);
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 10.0);
  ::kill(ranks[1]->pid(), SIGKILL);
}

}  // namespace
}  // namespace ddp::testing
