#include "runtime/metrics/exposition.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <fmt/format.h>

#include "runtime/health/hang_bound.h"
#include "runtime/metrics/training_metrics.h"

namespace ddp::metrics {
namespace {

using nlohmann::json;

double unixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}

// One metric family at a time: HELP and TYPE once, then its samples (the format wants a
// family's samples together).
class Page {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
  }
  void sample(std::string_view name, const std::string& labels, double value) {
    out_ << name;
    if (!labels.empty()) out_ << '{' << labels << '}';
    out_ << ' ' << number(value) << '\n';
  }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

std::string rankLabel(const WorkerReading& w) { return fmt::format("rank=\"{}\"", w.worker.rank); }

// A number from a worker's file by JSON pointer ("/checkpoint/seconds"), if it is one.
std::optional<double> field(const WorkerReading& w, const char* pointer) {
  if (!w.snapshot) return std::nullopt;
  const json::json_pointer p(pointer);
  if (!w.snapshot->contains(p)) return std::nullopt;
  const auto& v = w.snapshot->at(p);
  if (v.is_boolean()) return v.get<bool>() ? 1.0 : 0.0;
  if (!v.is_number()) return std::nullopt;
  return v.get<double>();
}

struct PerRank {
  const char* name;
  const char* type;
  const char* help;
  const char* pointer;
};

// Note [Metrics page]: the per-rank families, each from one field of the worker's file.
constexpr PerRank kPerRank[] = {
    {"ddprun_step", "gauge", "Optimizer steps done (resumed ones included).", "/step"},
    {"ddprun_total_steps", "gauge", "Optimizer steps the run will take.", "/total_steps"},
    {"ddprun_epoch", "gauge", "The epoch of the last step, from 0.", "/epoch"},
    {"ddprun_samples_total", "counter", "Training samples this rank consumed in this process.",
     "/samples_total"},
    {"ddprun_samples_per_second", "gauge", "Recent training throughput of all ranks together.",
     "/samples_per_second"},
    {"ddprun_loss", "gauge", "Training loss of this rank's last step.", "/loss"},
    {"ddprun_learning_rate", "gauge", "Learning rate of the last step.", "/learning_rate"},
    {"ddprun_last_step_timestamp_seconds", "gauge",
     "Unix time the last optimizer step finished; time() minus it is the stall.",
     "/last_step_unix"},
    {"ddprun_allreduce_bytes_total", "counter",
     "Bytes of tensors this rank contributed to all-reduces (and to the all-gathers that DDP "
     "reduces small CPU buckets with).",
     "/allreduce_bytes"},
    {"ddprun_checkpoint_duration_seconds", "gauge",
     "Time the last checkpoint took, snapshot to manifest.", "/checkpoint/seconds"},
    {"ddprun_checkpoint_blocking_seconds", "gauge",
     "Time the last checkpoint stopped training (a background save: its snapshot).",
     "/checkpoint/blocked_seconds"},
    {"ddprun_checkpoint_size_bytes", "gauge", "Size of the last checkpoint written.",
     "/checkpoint/bytes"},
    {"ddprun_last_checkpoint_step", "gauge", "Step of the last checkpoint written.",
     "/checkpoint/step"},
    {"ddprun_last_checkpoint_timestamp_seconds", "gauge",
     "Unix time the last checkpoint was written.", "/checkpoint/unix"},
    {"ddprun_eval_loss", "gauge", "Loss of the last evaluation on the test split.", "/eval/loss"},
    {"ddprun_eval_accuracy", "gauge", "Accuracy (0..1) of the last evaluation.", "/eval/accuracy"},
    {"ddprun_compute_seconds_per_step", "gauge",
     "Compute time per step (the step less its communication wait) at the last straggler check.",
     "/compute/seconds_per_step"},
    {"ddprun_straggler", "gauge",
     "1 when this rank's compute time per step was past the straggler threshold over the "
     "median at the last check.",
     "/compute/straggler"},
};

void renderStepHistogram(Page& page, const std::vector<WorkerReading>& workers) {
  page.family("ddprun_step_duration_seconds", "histogram", "Duration of optimizer steps.");
  for (const auto& w : workers) {
    if (!w.snapshot || !w.snapshot->contains("step_seconds")) continue;
    const auto& h = (*w.snapshot)["step_seconds"];
    const auto& buckets = h.value("buckets", json::array());
    if (!buckets.is_array() || buckets.size() != std::size(kStepBuckets) + 1) continue;
    double cumulative = 0;
    for (std::size_t b = 0; b < buckets.size(); ++b) {
      cumulative += buckets[b].get<double>();
      const std::string le = b < std::size(kStepBuckets) ? number(kStepBuckets[b]) : "+Inf";
      page.sample("ddprun_step_duration_seconds_bucket",
                  fmt::format("{},le=\"{}\"", rankLabel(w), le), cumulative);
    }
    page.sample("ddprun_step_duration_seconds_sum", rankLabel(w), h.value("sum", 0.0));
    page.sample("ddprun_step_duration_seconds_count", rankLabel(w), h.value("count", 0.0));
  }
}

void renderPhases(Page& page, const std::vector<WorkerReading>& workers) {
  page.family("ddprun_phase_seconds_total", "counter",
              "Time spent in each phase of training (data, forward-backward, communication "
              "wait, optimizer, checkpoint, evaluation).");
  for (const auto& w : workers) {
    if (!w.snapshot || !(*w.snapshot).contains("phase_seconds")) continue;
    for (const auto& [phase, value] : (*w.snapshot)["phase_seconds"].items()) {
      if (!value.is_number()) continue;
      page.sample("ddprun_phase_seconds_total", fmt::format("{},phase=\"{}\"", rankLabel(w), phase),
                  value.get<double>());
    }
  }
}

void renderProcesses(Page& page, const std::vector<WorkerReading>& workers,
                     const std::optional<ProcessStats>& server, bool servedByLauncher) {
  struct Family {
    const char* name;
    const char* type;
    const char* help;
    std::function<double(const ProcessStats&)> value;
  };
  const Family families[] = {
      {"process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
       [](const ProcessStats& p) { return p.cpuSeconds; }},
      {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
       [](const ProcessStats& p) { return static_cast<double>(p.residentBytes); }},
      {"process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
       [](const ProcessStats& p) { return static_cast<double>(p.virtualBytes); }},
      {"process_open_fds", "gauge", "Number of open file descriptors.",
       [](const ProcessStats& p) { return static_cast<double>(p.openFds); }},
      {"process_start_time_seconds", "gauge",
       "Start time of the process since unix epoch in seconds.",
       [](const ProcessStats& p) { return p.startUnix; }},
  };
  for (const auto& f : families) {
    page.family(f.name, f.type, f.help);
    if (server) page.sample(f.name, servedByLauncher ? "role=\"launcher\"" : "", f.value(*server));
    for (const auto& w : workers) {
      if (w.process) page.sample(f.name, rankLabel(w) + ",role=\"worker\"", f.value(*w.process));
    }
  }
}

std::optional<json> readJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  auto parsed = json::parse(in, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) return std::nullopt;
  return parsed;
}

// The running workers that write into `dir` (a stale file of a process gone is left out).
std::vector<WorkerView> workersIn(const std::string& dir) {
  std::vector<WorkerView> found;
  std::error_code error;
  for (auto it = std::filesystem::directory_iterator(dir, error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    const auto name = it->path().filename().string();
    int rank = -1;
    if (std::sscanf(name.c_str(), "rank-%d.json", &rank) != 1 || rank < 0 ||
        name != fmt::format("rank-{}.json", rank)) {
      continue;
    }
    const auto snapshot = readJsonFile(it->path().string());
    if (!snapshot) continue;
    const pid_t pid = snapshot->value("pid", -1);
    if (pid <= 0 || kill(pid, 0) != 0) continue;
    found.push_back({rank, snapshot->value("local_rank", 0), pid, it->path().string()});
  }
  std::sort(found.begin(), found.end(),
            [](const WorkerView& a, const WorkerView& b) { return a.rank < b.rank; });
  return found;
}

}  // namespace

std::vector<WorkerReading> readWorkers(const NodeView& view) {
  std::vector<WorkerReading> readings;
  auto workers = view.workers;
  if (!view.metricsDir.empty()) {
    for (auto& w : workersIn(view.metricsDir)) workers.push_back(std::move(w));
  }
  for (const auto& worker : workers) {
    WorkerReading r{worker, std::nullopt, std::nullopt};
    if (!worker.metricsFile.empty()) r.snapshot = readJsonFile(worker.metricsFile);
    pid_t pid = worker.pid;
    if (pid <= 0 && r.snapshot) pid = r.snapshot->value("pid", -1);
    if (pid > 0) r.process = readProcessStats(pid);
    readings.push_back(std::move(r));
  }
  return readings;
}

std::string renderMetrics(const NodeView& view, const std::vector<WorkerReading>& workers,
                          const std::optional<ProcessStats>& server) {
  Page page;
  for (const auto& f : kPerRank) {
    page.family(f.name, f.type, f.help);
    for (const auto& w : workers) {
      if (const auto v = field(w, f.pointer)) page.sample(f.name, rankLabel(w), *v);
    }
  }
  renderStepHistogram(page, workers);
  renderPhases(page, workers);
  page.family("ddprun_worker_up", "gauge", "1 while the worker's process runs.");
  for (const auto& w : workers) page.sample("ddprun_worker_up", rankLabel(w), w.process ? 1 : 0);
  page.family("ddprun_restarts_total", "counter",
              "Times this node's worker group was restarted after a failure.");
  page.sample("ddprun_restarts_total", "", view.restarts);
  page.family("ddprun_world_size", "gauge", "Ranks in the job.");
  if (view.worldSize > 0) page.sample("ddprun_world_size", "", view.worldSize);
  page.family("ddprun_local_workers", "gauge", "Workers this node runs.");
  page.sample("ddprun_local_workers", "", static_cast<double>(view.workers.size()));
  page.family("ddprun_ready", "gauge", "1 when the node is ready (the /readyz probe).");
  page.sample("ddprun_ready", "", judgeReadiness(view, workers, unixNow()).ok ? 1 : 0);
  renderProcesses(page, workers, server, view.servedByLauncher);
  return page.text();
}

Probe judgeLiveness(const NodeView& view, const std::vector<WorkerReading>& workers,
                    double nowUnix) {
  double lastStep = 0, lastProgress = 0, slowestStep = 0, slowestCheckpoint = 0;
  bool checkpointing = false, finished = false;
  for (const auto& w : workers) {
    lastStep = std::max(lastStep, field(w, "/last_step_unix").value_or(0));
    lastProgress = std::max(lastProgress, field(w, "/last_progress_unix").value_or(0));
    slowestStep = std::max(slowestStep, field(w, "/slowest_step_seconds").value_or(0));
    slowestCheckpoint =
        std::max(slowestCheckpoint, field(w, "/slowest_checkpoint_seconds").value_or(0));
    const auto phase = w.snapshot ? w.snapshot->value("phase", std::string()) : std::string();
    checkpointing |= phase == "checkpoint";
    finished |= phase == "finished";
  }
  if (lastStep == 0) return {true, "alive; training has not stepped yet"};
  if (finished) return {true, "alive; training finished"};
  const double bound = health::hangBoundSeconds(view.hangTimeoutSeconds, slowestStep,
                                                slowestCheckpoint, checkpointing);
  // A step, or a collective issued (an evaluation makes no step).
  const double stalled = nowUnix - std::max(lastStep, lastProgress);
  if (stalled > bound) {
    return {false, fmt::format("no rank of this node made progress for {:.0f} s (hang bound "
                               "{:.0f} s)",
                               stalled, bound)};
  }
  return {true,
          fmt::format("alive; last progress {:.1f} s ago (hang bound {:.0f} s)", stalled, bound)};
}

Probe judgeReadiness(const NodeView& view, const std::vector<WorkerReading>& workers,
                     double nowUnix) {
  if (!view.rendezvousDone || workers.empty()) return {false, "waiting for the rendezvous"};
  for (const auto& w : workers) {
    if (!w.process) return {false, fmt::format("rank {} is not running", w.worker.rank)};
    if (w.snapshot) {
      if (!w.snapshot->contains("last_step_unix") &&
          w.snapshot->value("phase", std::string("starting")) == "starting") {
        return {false, fmt::format("rank {} has not begun training", w.worker.rank)};
      }
      continue;
    }
    // A worker that writes no metrics file (a Python script) counts as started once it has
    // run kStartedWithoutFile: ddp::init writes the file before its rendezvous, so a
    // program of ours never gets here.
    if (nowUnix - w.process->startUnix < kStartedWithoutFile.count()) {
      return {false, fmt::format("rank {} has not begun training", w.worker.rank)};
    }
  }
  return {true, "ready; training has begun"};
}

}  // namespace ddp::metrics
