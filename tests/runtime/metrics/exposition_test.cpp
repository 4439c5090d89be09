// The /metrics page and the probes, from metrics files written here (no training).
#include "runtime/metrics/exposition.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace ddp::metrics {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class ExpositionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ddprun-exposition-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  WorkerView worker(int rank, const json& snapshot) {
    const auto path = dir_ / ("rank-" + std::to_string(rank) + ".json");
    std::ofstream(path) << snapshot.dump();
    return {rank, rank, getpid(), path.string()};
  }

  static json stepping(std::int64_t step, double lastStepUnix) {
    return {
        {"step", step},
        {"total_steps", 100},
        {"loss", 0.5},
        {"last_step_unix", lastStepUnix},
        {"phase", "forward-backward"},
        {"slowest_step_seconds", 0.5},
        {"step_seconds", {{"buckets", json(std::vector<int>(16, 0))}, {"sum", 0}, {"count", 0}}},
        {"phase_seconds", {{"data", 1.5}, {"forward-backward", 2.0}}}};
  }

  fs::path dir_;
};

TEST_F(ExpositionTest, EveryRankHasItsSeriesAndAbsentFieldsAreLeftOut) {
  auto zero = stepping(7, 1000);
  zero["checkpoint"] = {
      {"step", 5}, {"seconds", 0.25}, {"blocked_seconds", 0.0625}, {"bytes", 4096}, {"unix", 990}};
  auto histogram = json(std::vector<int>(16, 0));
  histogram[3] = 2;   // two steps of at most 0.01 s
  histogram[15] = 1;  // one slower than 60 s
  zero["step_seconds"] = {{"buckets", histogram}, {"sum", 61.5}, {"count", 3}};
  NodeView view;
  view.workers = {worker(0, zero), worker(1, stepping(7, 1001))};
  view.restarts = 2;
  view.worldSize = 2;
  view.rendezvousDone = true;
  const auto page = renderMetrics(view, readWorkers(view), readProcessStats(getpid()));

  EXPECT_NE(page.find("# TYPE ddprun_step gauge\n"), std::string::npos) << page;
  EXPECT_NE(page.find("ddprun_step{rank=\"0\"} 7\n"), std::string::npos) << page;
  EXPECT_NE(page.find("ddprun_step{rank=\"1\"} 7\n"), std::string::npos) << page;
  EXPECT_NE(page.find("ddprun_checkpoint_size_bytes{rank=\"0\"} 4096\n"), std::string::npos);
  EXPECT_NE(page.find("ddprun_checkpoint_blocking_seconds{rank=\"0\"} 0.0625\n"), std::string::npos)
      << page;
  // Only rank 0 wrote a checkpoint: rank 1 has no such series rather than a false 0.
  EXPECT_EQ(page.find("ddprun_checkpoint_size_bytes{rank=\"1\"}"), std::string::npos) << page;
  // Buckets are cumulative, +Inf is the count.
  EXPECT_NE(page.find("ddprun_step_duration_seconds_bucket{rank=\"0\",le=\"0.005\"} 0\n"),
            std::string::npos);
  EXPECT_NE(page.find("ddprun_step_duration_seconds_bucket{rank=\"0\",le=\"0.01\"} 2\n"),
            std::string::npos);
  EXPECT_NE(page.find("ddprun_step_duration_seconds_bucket{rank=\"0\",le=\"60\"} 2\n"),
            std::string::npos);
  EXPECT_NE(page.find("ddprun_step_duration_seconds_bucket{rank=\"0\",le=\"+Inf\"} 3\n"),
            std::string::npos);
  EXPECT_NE(page.find("ddprun_step_duration_seconds_count{rank=\"0\"} 3\n"), std::string::npos);
  EXPECT_NE(page.find("ddprun_phase_seconds_total{rank=\"1\",phase=\"data\"} 1.5\n"),
            std::string::npos);
  EXPECT_NE(page.find("ddprun_restarts_total 2\n"), std::string::npos);
  EXPECT_NE(page.find("ddprun_world_size 2\n"), std::string::npos);
  EXPECT_NE(page.find("process_open_fds{rank=\"1\",role=\"worker\"} "), std::string::npos);
  EXPECT_NE(page.find("process_resident_memory_bytes{role=\"launcher\"} "), std::string::npos);
  EXPECT_NE(page.find("ddprun_worker_up{rank=\"0\"} 1\n"), std::string::npos);
}

TEST_F(ExpositionTest, AMissingOrTornFileReadsAsNoneAndTheWorkerStillCounts) {
  const auto torn = dir_ / "rank-0.json";
  std::ofstream(torn) << "{\"step\": 3, \"lo";
  NodeView view;
  view.workers = {{0, 0, getpid(), torn.string()}, {1, 1, getpid(), (dir_ / "none.json").string()}};
  const auto readings = readWorkers(view);
  ASSERT_EQ(readings.size(), 2u);
  EXPECT_FALSE(readings[0].snapshot);
  EXPECT_FALSE(readings[1].snapshot);
  EXPECT_TRUE(readings[1].process);
  const auto page = renderMetrics(view, readings, std::nullopt);
  EXPECT_EQ(page.find("ddprun_step{"), std::string::npos) << page;
  EXPECT_NE(page.find("ddprun_worker_up{rank=\"1\"} 1\n"), std::string::npos) << page;
}

TEST_F(ExpositionTest, AMetricsDirectoryListsItsRunningRanksOnly) {
  auto live = stepping(3, 1000);
  live["pid"] = getpid();
  live["local_rank"] = 1;
  std::ofstream(dir_ / "rank-4.json") << live.dump();
  auto gone = stepping(3, 1000);
  gone["pid"] = 999999999;  // no such process: a file left by an earlier run
  std::ofstream(dir_ / "rank-5.json") << gone.dump();
  std::ofstream(dir_ / "rank-6.json.tmp") << live.dump();  // a write in progress
  NodeView view;
  view.metricsDir = dir_.string();
  const auto readings = readWorkers(view);
  ASSERT_EQ(readings.size(), 1u);
  EXPECT_EQ(readings[0].worker.rank, 4);
  EXPECT_EQ(readings[0].worker.localRank, 1);
}

TEST_F(ExpositionTest, LivenessFailsOnlyPastTheHangBound) {
  NodeView view;
  view.rendezvousDone = true;
  view.workers = {worker(0, {{"phase", "starting"}})};
  // Before the first step: alive (the rendezvous timeouts bound the start).
  EXPECT_TRUE(judgeLiveness(view, readWorkers(view), 5000).ok);

  view.workers = {worker(0, stepping(10, 1000)), worker(1, stepping(10, 1030))};
  // The bound is max(60 s, 10 x the slowest step 0.5 s) = 60 s after the newest step.
  EXPECT_TRUE(judgeLiveness(view, readWorkers(view), 1089).ok);
  const auto stalled = judgeLiveness(view, readWorkers(view), 1091);
  EXPECT_FALSE(stalled.ok);
  EXPECT_NE(stalled.reason.find("for 61 s (hang bound 60 s)"), std::string::npos) << stalled.reason;

  // An explicit --hang-timeout replaces the calibrated bound.
  view.hangTimeoutSeconds = 20;
  EXPECT_FALSE(judgeLiveness(view, readWorkers(view), 1051).ok);

  // A checkpoint in progress stretches it to at least 120 s.
  view.hangTimeoutSeconds = 0;
  auto writing = stepping(10, 1030);
  writing["phase"] = "checkpoint";
  view.workers = {worker(0, stepping(10, 1000)), worker(1, writing)};
  EXPECT_TRUE(judgeLiveness(view, readWorkers(view), 1140).ok);
  EXPECT_FALSE(judgeLiveness(view, readWorkers(view), 1151).ok);
}

TEST_F(ExpositionTest, ReadinessWaitsForTheRendezvousAndTheFirstStep) {
  NodeView view;
  const double now = readProcessStats(getpid())->startUnix + 60;  // this test began a minute ago
  EXPECT_FALSE(judgeReadiness(view, readWorkers(view), now).ok);
  view.rendezvousDone = true;
  view.workers = {worker(0, stepping(1, 1000)), worker(1, {{"phase", "starting"}})};
  const auto starting = judgeReadiness(view, readWorkers(view), now);
  EXPECT_FALSE(starting.ok);
  EXPECT_NE(starting.reason.find("rank 1 has not begun training"), std::string::npos);
  // A worker without a metrics file (a Python script) counts once it has run 10 s.
  view.workers = {worker(0, stepping(1, 1000)), {1, 1, getpid(), ""}};
  EXPECT_TRUE(judgeReadiness(view, readWorkers(view), now).ok);
  EXPECT_FALSE(judgeReadiness(view, readWorkers(view), now - 55).ok);
  // A worker that is gone is not ready.
  view.workers = {worker(0, stepping(1, 1000)), {1, 1, 999999999, ""}};
  EXPECT_FALSE(judgeReadiness(view, readWorkers(view), now).ok);
}

}  // namespace
}  // namespace ddp::metrics
