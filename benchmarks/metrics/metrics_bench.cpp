// What the metrics cost, part by part, in CPU time (Google Benchmark): the resolution the
// side-by-side step times of run_metrics_cost.py lack on a busy 2-core machine.
//   BM_StepRecording   the training thread's calls per step, as Trainer::fit makes them
//                      (three phases, stepDone, recordTraining): divide by a step's time
//   BM_ExportSnapshot  the exporter thread's work per write (twice a second)
//   BM_RenderPage      ddprun's work per scrape of a 2-rank node: read both files and
//                      /proc entries, render the page
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include "runtime/health/liveness.h"
#include "runtime/metrics/exposition.h"
#include "runtime/metrics/training_metrics.h"

namespace {

namespace health = ddp::health;
namespace metrics = ddp::metrics;

void BM_StepRecording(benchmark::State& state) {
  std::int64_t step = 0;
  for (auto _ : state) {
    { const health::PhaseScope data(health::Phase::kData); }
    { const health::PhaseScope forwardBackward(health::Phase::kForwardBackward); }
    { const health::PhaseScope optimizing(health::Phase::kOptimizer); }
    health::stepDone(++step);
    metrics::recordTraining(0, 0.5, 0.01, 32);
  }
}
BENCHMARK(BM_StepRecording);

void BM_ExportSnapshot(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(metrics::snapshot().dump());
}
BENCHMARK(BM_ExportSnapshot);

void BM_RenderPage(benchmark::State& state) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("ddprun-metrics-bench-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  metrics::NodeView view;
  view.worldSize = 2;
  view.rendezvousDone = true;
  for (int rank = 0; rank < 2; ++rank) {
    const auto file = dir / ("rank-" + std::to_string(rank) + ".json");
    std::ofstream(file) << metrics::snapshot().dump();
    view.workers.push_back({rank, rank, getpid(), file.string()});
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(metrics::renderMetrics(view, metrics::readWorkers(view),
                                                    metrics::readProcessStats(getpid())));
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_RenderPage);

}  // namespace

BENCHMARK_MAIN();
