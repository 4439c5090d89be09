// The TrainJob status request as Trainer v2.3.0's server takes it (Note [TrainJob progress]);
// the HTTPS exchange itself is tests/launcher/metrics_test.py's, against a TLS server.
#include "runtime/metrics/trainjob_progress.h"

#include <regex>

#include <gtest/gtest.h>

namespace ddp::metrics {
namespace {

using nlohmann::json;

TEST(TrainJobProgressTest, TheRequestCarriesPercentRemainingTimeAndStringMetrics) {
  const json snapshot{{"step", 250},
                      {"total_steps", 1000},
                      {"epoch", 1},
                      {"loss", 0.123456789},
                      {"learning_rate", 0.01},
                      {"eval", {{"loss", 0.5}, {"accuracy", 0.875}}}};
  const auto request = trainJobStatusRequest(snapshot, 10.0, 1796663741.9);
  const auto& status = request.at("trainerStatus");
  EXPECT_EQ(status.at("progressPercentage"), 25);
  EXPECT_TRUE(status.at("progressPercentage").is_number_integer());
  EXPECT_EQ(status.at("estimatedRemainingSeconds"), 75);  // 750 steps at 10 per second
  EXPECT_EQ(status.at("lastUpdatedTime"), "2026-12-07T17:15:41Z");
  std::map<std::string, std::string> metrics;
  for (const auto& m : status.at("metrics")) {
    ASSERT_TRUE(m.at("value").is_string()) << m;  // the CRD: values are strings
    EXPECT_LE(m.at("value").get<std::string>().size(), 64u);
    metrics[m.at("name")] = m.at("value");
  }
  EXPECT_EQ(metrics.at("step"), "250");
  EXPECT_EQ(metrics.at("loss"), "0.123457");
  EXPECT_EQ(metrics.at("eval_accuracy"), "0.875");
  EXPECT_EQ(metrics.count("samples_per_second"), 0u);  // not in the file: not sent
}

TEST(TrainJobProgressTest, TheEndIsAHundredPercentAndAnUnknownRateSendsNoEstimate) {
  const auto done = trainJobStatusRequest({{"step", 40}, {"total_steps", 40}}, 0, 0);
  EXPECT_EQ(done.at("trainerStatus").at("progressPercentage"), 100);
  EXPECT_EQ(done.at("trainerStatus").at("estimatedRemainingSeconds"), 0);
  const auto early = trainJobStatusRequest({{"step", 0}, {"total_steps", 40}}, 0, 0);
  EXPECT_EQ(early.at("trainerStatus").at("progressPercentage"), 0);
  EXPECT_FALSE(early.at("trainerStatus").contains("estimatedRemainingSeconds"));
  // Without a total (a script that reports only its step) no percentage either.
  const auto open = trainJobStatusRequest({{"step", 5}}, 1, 0);
  EXPECT_FALSE(open.at("trainerStatus").contains("progressPercentage"));
  EXPECT_TRUE(open.at("trainerStatus").contains("lastUpdatedTime"));
}

}  // namespace
}  // namespace ddp::metrics
