#include "runtime/metrics/training_metrics.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "runtime/health/liveness.h"

namespace ddp::metrics {
namespace {

constexpr std::size_t kBucketCount = std::size(kStepBuckets);

double unixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

// Note [Training metrics]: the step counters are atomics (the training thread's hot path);
// the rest changes once per log window, checkpoint or evaluation, under `mutex`.
struct Registry {
  std::atomic<std::int64_t> step{0};
  std::atomic<double> lastStepUnix{0};
  std::atomic<std::int64_t> allreduceBytes{0};
  std::array<std::atomic<std::uint64_t>, kBucketCount + 1> stepBuckets{};  // +Inf last
  std::atomic<std::uint64_t> stepCount{0};
  std::atomic<std::int64_t> stepNsSum{0};

  std::mutex mutex;
  int rank = -1;
  int localRank = -1;
  int worldSize = 0;
  RunShape shape;
  double startUnix = unixNow();
  std::map<std::string, std::int64_t, std::less<>> phaseNs;
  std::optional<std::int64_t> epoch;
  std::optional<double> loss;
  std::optional<double> learningRate;
  std::int64_t samples = 0;
  // Throughput over the last few windows: samples and the time they took.
  double rateSamples = 0;
  double rateSince = 0;
  double samplesPerSecond = 0;
  std::optional<nlohmann::json> checkpoint;
  std::optional<nlohmann::json> evaluation;
  std::optional<nlohmann::json> compute;
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

void setIdentity(int rank, int localRank, int worldSize) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.rank = rank;
  r.localRank = localRank;
  r.worldSize = worldSize;
}

void setRunShape(const RunShape& shape) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.shape = shape;
  r.rateSamples = 0;
  r.rateSince = unixNow();
}

void recordStep(std::int64_t step, std::chrono::nanoseconds duration) {
  auto& r = registry();
  r.step.store(step, std::memory_order_relaxed);
  r.lastStepUnix.store(unixNow(), std::memory_order_relaxed);
  if (duration.count() <= 0) return;
  const double s = seconds(duration);
  std::size_t bucket = 0;
  while (bucket < kBucketCount && s > kStepBuckets[bucket]) ++bucket;
  r.stepBuckets[bucket].fetch_add(1, std::memory_order_relaxed);
  r.stepCount.fetch_add(1, std::memory_order_relaxed);
  r.stepNsSum.fetch_add(duration.count(), std::memory_order_relaxed);
}

void recordPhaseTime(std::string_view phase, std::chrono::nanoseconds spent) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto it = r.phaseNs.find(phase);
  if (it == r.phaseNs.end()) it = r.phaseNs.emplace(std::string(phase), 0).first;
  it->second += spent.count();
}

double phaseSeconds(std::string_view phase) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const auto it = r.phaseNs.find(phase);
  return it == r.phaseNs.end() ? 0 : static_cast<double>(it->second) * 1e-9;
}

void recordAllreduceBytes(std::int64_t bytes) {
  registry().allreduceBytes.fetch_add(bytes, std::memory_order_relaxed);
}

void recordTraining(std::int64_t epoch, double loss, double learningRate, std::int64_t samples) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.epoch = epoch;
  r.loss = loss;
  r.learningRate = learningRate;
  r.samples += samples;
  // Samples per second over the windows since the rate was last taken (>= 1 s apart), so
  // that the ETA neither jumps with one slow step nor lags by minutes.
  const double now = unixNow();
  r.rateSamples += static_cast<double>(samples);
  if (r.rateSince == 0) r.rateSince = r.startUnix;
  if (now - r.rateSince >= 1.0) {
    r.samplesPerSecond = r.rateSamples / (now - r.rateSince);
    r.rateSamples = 0;
    r.rateSince = now;
  }
}

void recordCheckpoint(std::int64_t step, std::chrono::nanoseconds duration,
                      std::chrono::nanoseconds blocked, std::int64_t bytes) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.checkpoint = nlohmann::json{{"step", step},
                                {"seconds", seconds(duration)},
                                {"blocked_seconds", seconds(blocked)},
                                {"bytes", bytes},
                                {"unix", unixNow()}};
}

void recordEvaluation(double loss, std::optional<double> accuracy) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.evaluation = nlohmann::json{{"loss", loss}};
  if (accuracy) (*r.evaluation)["accuracy"] = *accuracy;
}

void recordCompute(double secondsPerStep, double medianSecondsPerStep, bool straggler) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.compute = nlohmann::json{{"seconds_per_step", secondsPerStep},
                             {"median_seconds_per_step", medianSecondsPerStep},
                             {"straggler", straggler}};
}

nlohmann::json snapshot() {
  auto& r = registry();
  nlohmann::json s;
  s["pid"] = getpid();
  s["time_unix"] = unixNow();
  s["step"] = r.step.load(std::memory_order_relaxed);
  const double lastStep = r.lastStepUnix.load(std::memory_order_relaxed);
  if (lastStep > 0) s["last_step_unix"] = lastStep;
  s["allreduce_bytes"] = r.allreduceBytes.load(std::memory_order_relaxed);
  nlohmann::json buckets = nlohmann::json::array();
  for (const auto& b : r.stepBuckets) buckets.push_back(b.load(std::memory_order_relaxed));
  s["step_seconds"] = {{"buckets", buckets},
                       {"count", r.stepCount.load(std::memory_order_relaxed)},
                       {"sum", r.stepNsSum.load(std::memory_order_relaxed) * 1e-9}};

  // The phase and the slowest step and checkpoint, for /healthz's hang bound.
  const auto live = health::snapshot();
  s["phase"] = std::string(health::phaseName(live.phase));
  s["slowest_step_seconds"] = seconds(live.slowestStep);
  s["slowest_checkpoint_seconds"] = seconds(live.slowestCheckpoint);
  // Progress as the watchdog counts it (Note [Hang bound]): a step, or a collective issued
  // (an evaluation or a checkpoint makes no step but issues collectives).
  double progress = lastStep;
  if (live.collectives > 0)
    progress = std::max(progress, unixNow() - seconds(live.sinceCollective));
  if (progress > 0) s["last_progress_unix"] = progress;

  std::lock_guard<std::mutex> lock(r.mutex);
  s["rank"] = r.rank;
  s["local_rank"] = r.localRank;
  s["world_size"] = r.worldSize;
  s["start_unix"] = r.startUnix;
  if (r.shape.totalSteps > 0) {
    s["total_steps"] = r.shape.totalSteps;
    s["steps_per_epoch"] = r.shape.stepsPerEpoch;
    s["epochs"] = r.shape.epochs;
    s["first_step"] = r.shape.firstStep;
  }
  nlohmann::json phases = nlohmann::json::object();
  for (const auto& [name, ns] : r.phaseNs) phases[name] = ns * 1e-9;
  s["phase_seconds"] = phases;
  if (r.epoch) s["epoch"] = *r.epoch;
  if (r.loss) s["loss"] = *r.loss;
  if (r.learningRate) s["learning_rate"] = *r.learningRate;
  s["samples_total"] = r.samples;
  if (r.samplesPerSecond > 0) s["samples_per_second"] = r.samplesPerSecond;
  if (r.checkpoint) s["checkpoint"] = *r.checkpoint;
  if (r.evaluation) s["eval"] = *r.evaluation;
  if (r.compute) s["compute"] = *r.compute;
  return s;
}

struct Exporter::Impl {
  std::string path;
  bool removeAtEnd = false;
  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  std::thread thread;

  void write() {
    try {
      const auto text = snapshot().dump();
      const auto tmp = path + ".tmp";
      {
        std::ofstream out(tmp, std::ios::trunc);
        out << text << "\n";
        if (!out) return;
      }
      std::error_code ignored;
      std::filesystem::rename(tmp, path, ignored);
    } catch (...) {
      // Note [Training metrics]: an update lost, never the training.
    }
  }

  void loop() {
    std::unique_lock<std::mutex> lock(mutex);
    while (!stopping) {
      lock.unlock();
      write();
      lock.lock();
      wake.wait_for(lock, kExportInterval, [&] { return stopping; });
    }
  }
};

Exporter::Exporter(std::string path, bool removeAtEnd) : impl_(std::make_unique<Impl>()) {
  impl_->path = std::move(path);
  impl_->removeAtEnd = removeAtEnd;
  impl_->thread = std::thread([impl = impl_.get()] { impl->loop(); });
}

Exporter::~Exporter() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->thread.join();
  if (!impl_->removeAtEnd) {
    impl_->write();
    return;
  }
  std::error_code ignored;
  std::filesystem::remove(impl_->path, ignored);
  std::filesystem::remove(std::filesystem::path(impl_->path).parent_path(), ignored);  // if empty
}

}  // namespace ddp::metrics
