// A node's workers as Prometheus sees them (GET /metrics) and as the probes do (/healthz,
// /readyz): rendered from each worker's metrics file (Note [Training metrics] in
// training_metrics.h) and its /proc entry. Plain C++: the launcher uses it.
//
// Note [Metrics page]
// ~~~~~~~~~~~~~~~~~~~
// One page per pod, whoever serves it (ddprun, or under mpirun the node's local rank 0):
//   - per worker, labelled rank="<global rank>": ddprun_step, ddprun_epoch,
//     ddprun_samples_total, ddprun_loss, ddprun_learning_rate, ddprun_step_duration_seconds
//     (histogram), ddprun_phase_seconds_total{phase}, ddprun_allreduce_bytes_total,
//     ddprun_last_step_timestamp_seconds, checkpoints, evaluations, stragglers, and the
//     standard process_* of the worker's process (any program: a Python script's too);
//   - per node: ddprun_restarts_total, ddprun_world_size, ddprun_local_workers, and the
//     serving process's own process_* labelled role="launcher" or not at all.
// A metric a worker has not reported (no step yet, no checkpoint, no file) is left out
// rather than shown as 0: an absent series is what Prometheus' absent() and staleness
// understand, a false 0 would look like a reset.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/metrics/process_stats.h"

namespace ddp::metrics {

struct WorkerView {
  int rank = 0;  // global
  int localRank = 0;
  pid_t pid = -1;           // -1: unknown (the pid is then read from the metrics file)
  std::string metricsFile;  // "" = none
};

// What the node knows besides its workers' files.
struct NodeView {
  std::vector<WorkerView> workers;  // this attempt's, empty before the first and between
  // Also every running worker's "rank-<global rank>.json" here (under mpirun, where the
  // node's ranks are known only by the files they write).
  std::string metricsDir;
  int restarts = 0;  // worker group restarts so far
  int worldSize = 0;
  bool rendezvousDone = false;
  double hangTimeoutSeconds = 0;  // --hang-timeout, 0 = calibrated (Note [Hang bound])
  bool servedByLauncher = true;   // the serving process is ddprun (its process_* role)
};

struct WorkerReading {
  WorkerView worker;
  std::optional<nlohmann::json> snapshot;  // the metrics file, parsed
  std::optional<ProcessStats> process;
};

// Reads every worker's file and /proc entry (a missing or torn file reads as none).
std::vector<WorkerReading> readWorkers(const NodeView& view);

// The Prometheus text exposition format, version 0.0.4.
std::string renderMetrics(const NodeView& view, const std::vector<WorkerReading>& workers,
                          const std::optional<ProcessStats>& server);

struct Probe {
  bool ok = false;
  std::string reason;  // one line, for the probe's body and the log
};

// /healthz: alive, and once training runs, some rank made progress (a step, or a collective
// issued) within the hang bound (Note [Hang bound] in runtime/health/watchdog.h), as the
// watchdog counts it.
Probe judgeLiveness(const NodeView& view, const std::vector<WorkerReading>& workers,
                    double nowUnix);
// /readyz: the rendezvous is done and every worker has begun training: its metrics file
// says so, or, for a worker that writes none (a Python script), it has run
// kStartedWithoutFile.
constexpr std::chrono::seconds kStartedWithoutFile{10};
Probe judgeReadiness(const NodeView& view, const std::vector<WorkerReading>& workers,
                     double nowUnix);

}  // namespace ddp::metrics
