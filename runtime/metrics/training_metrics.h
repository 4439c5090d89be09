// What this rank's training has done so far, for Prometheus (/metrics), the TrainJob
// progress and the progress bar.
//
// Note [Training metrics]
// ~~~~~~~~~~~~~~~~~~~~~~~
// One process-wide registry: the training thread records (relaxed atomics, or a short
// mutex for the few values that are not one number), and an exporter thread reads a
// snapshot every kExportInterval and writes it as JSON to this rank's metrics file,
// replaced atomically (write a temporary, rename). Nothing the scraper does reaches the
// training thread: the launcher (or, under mpirun, the node's local rank 0) serves
// /metrics from the files (runtime/metrics/exposition.h), and a slow or broken scraper
// only delays its own reply.
//   - health::stepDone(step) records the step, its duration and time (so a user's own loop
//     gets them by calling it), health::PhaseScope the time spent in each phase, and the
//     collective log the bytes all-reduced: Trainer::fit and a user's loop alike.
//   - Trainer::fit adds what only it knows: the loss, learning rate, samples, epoch,
//     checkpoints, evaluations, stragglers, and the run's size for the ETA.
// The file's format (one JSON object, every key optional) is the contract a Python
// script under ddprun can also write to DDPRUN_METRICS_FILE: step, total_steps, epoch,
// samples_total, loss, learning_rate, last_step_unix, samples_per_second, ...
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace ddp::metrics {

constexpr std::chrono::milliseconds kExportInterval{500};

// The step duration histogram's upper bounds, seconds (Prometheus' le, +Inf implied).
inline constexpr double kStepBuckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                          0.5,   1,      2.5,   5,    10,    30,   60};

// The run as Trainer::fit plans it (for percentages and the ETA).
struct RunShape {
  std::int64_t totalSteps = 0;
  std::int64_t stepsPerEpoch = 0;
  std::int64_t epochs = 0;
  std::int64_t samplesPerStep = 0;  // all ranks together
  std::int64_t firstStep = 0;       // resumed from (0 when fresh)
};

void setIdentity(int rank, int localRank, int worldSize);
void setRunShape(const RunShape& shape);
// Called by health::stepDone: the step count after it and how long it took (0 for the
// first step of a process: nothing to measure from).
void recordStep(std::int64_t step, std::chrono::nanoseconds duration);
// Time spent in a phase (health::Phase as its name), called when the phase ends.
void recordPhaseTime(std::string_view phase, std::chrono::nanoseconds spent);
void recordAllreduceBytes(std::int64_t bytes);
// The time recorded for `phase` so far, seconds.
double phaseSeconds(std::string_view phase);
void recordTraining(std::int64_t epoch, double loss, double learningRate, std::int64_t samples);
// `duration`: the whole save; `blocked`: how long training waited for it (for a background
// save, the snapshot: Note [Asynchronous saves] in runtime/train/checkpointer.h).
void recordCheckpoint(std::int64_t step, std::chrono::nanoseconds duration,
                      std::chrono::nanoseconds blocked, std::int64_t bytes);
void recordEvaluation(double loss, std::optional<double> accuracy);
// Straggler check (Trainer): this rank's compute seconds per step, the median over ranks,
// and whether this rank is the straggler.
void recordCompute(double secondsPerStep, double medianSecondsPerStep, bool straggler);

// The snapshot as the metrics file holds it.
nlohmann::json snapshot();

// Writes snapshot() to `path` every kExportInterval from a thread of its own, and once
// more when destroyed; or, with removeAtEnd, then removes the file and its directory if
// that is empty. Never throws from its thread: a full disk loses an update.
class Exporter {
 public:
  explicit Exporter(std::string path, bool removeAtEnd = false);
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ddp::metrics
