#include "launcher/worker_group.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "launcher/failure_report.h"
#include "runtime/exit_codes.h"
#include "runtime/health/stacks.h"
#include "runtime/log/logging.h"

namespace ddp::launcher {
namespace {

using Clock = std::chrono::steady_clock;

// Once every worker's group is empty, how long a pipe held open by something that left its
// group (setsid) is still read before the launcher closes it; the same after SIGKILL.
constexpr std::chrono::seconds kDrainTime{2};
// How often the process groups of exited workers are checked for leftovers. Their exits
// arrive as SIGCHLD (the launcher adopts them: Note [Nothing outlives the launcher]), so
// this only bounds what a subreaper inside a worker would hide.
constexpr std::chrono::milliseconds kGroupCheckInterval{100};
// A worker stopped this long (SIGSTOP) is killed as dead; checked this often.
constexpr std::chrono::seconds kStoppedLimit{10};
constexpr std::chrono::seconds kStoppedCheckInterval{1};

// "SIGTERM", "SIGUSR1": any signal --signals-to-handle may forward.
std::string signalName(int signal) {
  const char* abbreviation = sigabbrev_np(signal);
  return abbreviation ? std::string("SIG") + abbreviation : "signal " + std::to_string(signal);
}

// One attempt's state: the workers, their pipes, and the teardown once it has begun.
class Attempt {
 public:
  Attempt(const WorkerGroupSpec& spec, int restartCount, SignalChannel& signals,
          GroupGuardian& guardian, const MembershipMonitor* monitor)
      : spec_(spec),
        restartCount_(restartCount),
        signals_(signals),
        guardian_(guardian),
        monitor_(monitor),
        router_(outputOptionsOf(spec), restartCount, spec.plan.nprocPerNode) {}

  Attempt(const Attempt&) = delete;
  Attempt& operator=(const Attempt&) = delete;

  AttemptResult run() {
    startAll();
    while (!finished()) {
      pollOnce();
      if (tearingDown_ && Clock::now() >= killDeadline_ && !killed_) killRemaining();
    }
    for (auto& w : workers_) {
      if (w.groupGone) continue;
      // Only a process stuck in the kernel survives SIGKILL past kDrainTime.
      signalProcessGroup(w.pid, SIGKILL);
      guardian_.forget(w.pid);
    }
    if (spec_.monitor) spec_.monitor->workersExited();
    nameTheCulprit();
    return result_;
  }

  ~Attempt() {
    if (!ownErrorDir_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(ownErrorDir_, ignored);
    }
  }

 private:
  static OutputOptions outputOptionsOf(const WorkerGroupSpec& spec) {
    auto options = spec.output;
    options.firstGlobalRank = spec.plan.globalRank(0);
    return options;
  }

  // One line at info for the whole group (the start-up summary); each worker at debug.
  void startAll() {
    auto envOptions = spec_.env;
    envOptions.restartCount = restartCount_;
    // Every worker gets an error file (Note [The error file]): in the log layout when there
    // is one, else in a directory of this attempt's own, removed at its end.
    envOptions.attemptLogDir = router_.attemptLogDir();
    if (envOptions.attemptLogDir.empty()) {
      std::string pattern =
          (std::filesystem::temp_directory_path() / "ddprun-errors-XXXXXX").string();
      if (mkdtemp(pattern.data()) != nullptr) {
        ownErrorDir_ = pattern;
        for (int local = 0; local < spec_.plan.nprocPerNode; ++local) {
          std::filesystem::create_directories(std::filesystem::path(pattern) /
                                              std::to_string(local));
        }
        envOptions.attemptLogDir = ownErrorDir_;
      }
    }
    errorFileDir_ = envOptions.attemptLogDir;
    std::string pids;
    for (int local = 0; local < spec_.plan.nprocPerNode; ++local) {
      Worker w;
      w.localRank = local;
      w.globalRank = spec_.plan.globalRank(local);
      auto started = startProcess(spec_.argv, workerEnvironment(spec_.plan, local, envOptions));
      w.pid = started.pid;
      w.stdoutFd = started.stdoutFd;
      w.stderrFd = started.stderrFd;
      guardian_.watch(w.pid);
      log::debug("launcher", "started rank={} local_rank={} pid={} restart_count={}", w.globalRank,
                 local, w.pid, restartCount_);
      pids += (pids.empty() ? "" : ",") + std::to_string(w.pid);
      workers_.push_back(w);
    }
    if (spec_.monitor) {
      spec_.monitor->update([&](metrics::NodeView& node) {
        node.workers.clear();
        for (const auto& w : workers_) {
          node.workers.push_back(
              {w.globalRank, w.localRank, w.pid,
               envOptions.metricsFiles ? workerMetricsFile(errorFileDir_, w.localRank) : ""});
        }
        node.restarts = restartCount_;
        node.worldSize = spec_.plan.worldSize();
        node.rendezvousDone = true;
        node.hangTimeoutSeconds = envOptions.hangTimeoutSeconds;
      });
    }
    log::info("launcher", "started ranks={}..{} pids={} restart_count={}{}",
              workers_.front().globalRank, workers_.back().globalRank, pids, restartCount_,
              router_.attemptLogDir().empty() ? "" : " logs=" + router_.attemptLogDir());
  }

  // Note [The error file] in runtime/distributed.h: of the workers that failed, the one
  // whose own error came first is the culprit, not the one reaped first; the others' errors
  // that only say a peer went away are its consequences.
  void nameTheCulprit() {
    if (result_.outcome != AttemptOutcome::kWorkerFailed || !result_.failure) return;
    if (errorFileDir_.empty()) return;
    std::vector<std::pair<const Worker*, WorkerErrorRecord>> reported;
    for (const auto& w : workers_) {
      if (w.status.succeeded()) continue;
      const auto path =
          std::filesystem::path(errorFileDir_) / std::to_string(w.localRank) / "error.json";
      if (auto record = readWorkerErrorFile(path.string())) reported.emplace_back(&w, *record);
    }
    auto& failure = *result_.failure;
    readHeartbeats(failure);
    // The watchdogs' verdict names the culprit job-wide (Note [Watchdog]); the fullest copy
    // (rank 0's holds every reachable rank's flight records) goes into the report.
    // A judged verdict (rank 0's, or a desync found at a failure) names the culprit; a
    // rank's "rank 0's store is lost" only says what it saw.
    auto judged = [](const std::string& text) {
      const auto health = nlohmann::json::parse(text, nullptr, false);
      return health.is_object() && health.value("kind", std::string()) != "store_lost";
    };
    for (const auto& [w, record] : reported) {
      const bool better = judged(record.health) == judged(failure.health)
                              ? record.health.size() > failure.health.size()
                              : judged(record.health);
      if (better) failure.health = record.health;
      // A hung rank whose watchdog still ran took its own stacks.
      const auto health = nlohmann::json::parse(record.health, nullptr, false);
      if (health.is_object() && health.contains("stacks") && health["stacks"].is_string()) {
        stacks_[std::to_string(w->globalRank)] = health["stacks"];
      }
    }
    if (!stacks_.empty()) failure.stacks = stacks_.dump();
    std::optional<int> verdictCulprit;
    bool desync = false;
    if (const auto health = nlohmann::json::parse(failure.health, nullptr, false);
        health.is_object()) {
      if (health.value("culprit", -1) >= 0) verdictCulprit = health.value("culprit", -1);
      desync = health.value("kind", std::string()) == "desync";
    }
    // Only a first failure that says it lost a peer gives way: one killed by a signal, or
    // silent, may well be the cause of the others' errors.
    const bool firstLostAPeer =
        std::any_of(reported.begin(), reported.end(), [&](const auto& entry) {
          return entry.first->globalRank == failure.globalRank && entry.second.peerLoss;
        });
    const std::pair<const Worker*, WorkerErrorRecord>* culprit = nullptr;
    for (const auto& entry : reported) {
      if (!firstLostAPeer || entry.second.peerLoss) continue;
      if (!culprit || entry.second.timeNs < culprit->second.timeNs) culprit = &entry;
    }
    const Worker* named = culprit ? culprit->first : nullptr;
    if (verdictCulprit && firstLostAPeer) {  // a local culprit, maybe silent (stopped, killed)
      for (const auto& w : workers_) {
        if (w.globalRank == *verdictCulprit) named = &w;
      }
    }
    // A desync is the program's bug whichever rank was reaped first: the report carries the
    // code of a rank that exited with it, so that nobody restarts it.
    const auto exitedDesync = [](const Worker& w) {
      return w.status.signal == 0 && w.status.exitCode == kExitDesync;
    };
    const bool namedExitedDesync =
        named ? exitedDesync(*named)
              : failure.status.signal == 0 && failure.status.exitCode == kExitDesync;
    if (desync && !namedExitedDesync) {
      for (const auto& w : workers_) {
        if (exitedDesync(w) && (!named || !exitedDesync(*named))) named = &w;
      }
    }
    if (named && named->globalRank != failure.globalRank) {
      const Worker& w = *named;
      log::info("launcher",
                "rank={} failed first by the workers' error files and the watchdog ({}); "
                "rank={} was reaped first",
                w.globalRank, w.status.describe(), failure.globalRank);
      failure.globalRank = w.globalRank;
      failure.localRank = w.localRank;
      failure.pid = w.pid;
      failure.status = w.status;
      failure.lastLines = router_.lastLines(w.localRank);
    }
    for (const auto& [w, record] : reported) {
      if (w->globalRank == failure.globalRank) {
        failure.message = record.message;
      } else {
        failure.consequences.push_back("rank " + std::to_string(w->globalRank) + ": " +
                                       record.message);
      }
    }
  }

  // Each worker's last heartbeat (DDPRUN_HEARTBEAT_FILE), with its age.
  void readHeartbeats(WorkerFailure& failure) const {
    auto beats = nlohmann::json::object();
    for (const auto& w : workers_) {
      const auto path =
          std::filesystem::path(errorFileDir_) / std::to_string(w.localRank) / "heartbeat.json";
      std::ifstream in(path);
      auto beat = nlohmann::json::parse(in, nullptr, false);
      if (!beat.is_object()) continue;
      std::error_code ec;
      const auto written = std::filesystem::last_write_time(path, ec);
      if (!ec) {
        beat["age_s"] =
            std::chrono::duration<double>(std::filesystem::file_time_type::clock::now() - written)
                .count();
      }
      beat.erase("recent");
      beats[std::to_string(w.globalRank)] = std::move(beat);
    }
    if (!beats.empty()) failure.heartbeats = beats.dump();
  }

  // A stopped worker (SIGSTOP, a debugger) never answers SIGTERM: its stacks go into the
  // report (the watchdog cannot take them: it is stopped too), then it is killed.
  void killStoppedWorkers() {
    for (auto& w : workers_) {
      if (w.state != WorkerState::kRunning || health::processState(w.pid) != 'T') continue;
      log::warn("launcher", "rank={} pid={} is stopped; taking its stacks, then SIGKILL",
                w.globalRank, w.pid);
      stacks_[std::to_string(w.globalRank)] = health::threadStacks(w.pid);
      signalProcessGroup(w.pid, SIGKILL);
    }
  }

  // A worker stopped (SIGSTOP) for kStoppedLimit is taken for dead: with a rank per pod,
  // nothing else on its node would notice (the other ranks' watchdogs end them, not it).
  void killLongStoppedWorkers() {
    nextStoppedCheck_ = Clock::now() + kStoppedCheckInterval;
    for (auto& w : workers_) {
      if (w.state != WorkerState::kRunning || health::processState(w.pid) != 'T') {
        w.stoppedSince.reset();
        continue;
      }
      if (!w.stoppedSince) w.stoppedSince = Clock::now();
      if (Clock::now() - *w.stoppedSince < kStoppedLimit) continue;
      log::error("launcher",
                 "rank={} pid={} has been stopped for {} s; taking its stacks, then "
                 "SIGKILL",
                 w.globalRank, w.pid, kStoppedLimit.count());
      stacks_[std::to_string(w.globalRank)] = health::threadStacks(w.pid);
      signalProcessGroup(w.pid, SIGKILL);
    }
  }

  bool anyRunning() const {
    return std::any_of(workers_.begin(), workers_.end(),
                       [](const Worker& w) { return w.state == WorkerState::kRunning; });
  }

  bool allSucceeded() const {
    return std::all_of(workers_.begin(), workers_.end(),
                       [](const Worker& w) { return w.state == WorkerState::kSucceeded; });
  }

  bool anyPipeOpen() const {
    return std::any_of(workers_.begin(), workers_.end(),
                       [](const Worker& w) { return w.stdoutFd >= 0 || w.stderrFd >= 0; });
  }

  bool anyGroupLeft() const {
    return std::any_of(workers_.begin(), workers_.end(),
                       [](const Worker& w) { return !w.groupGone; });
  }

  // Marks the groups of exited workers that have no member left; the guardian forgets them.
  void noteEmptyGroups() {
    for (auto& w : workers_) {
      if (w.state == WorkerState::kRunning || w.groupGone || processGroupExists(w.pid)) {
        continue;
      }
      w.groupGone = true;
      guardian_.forget(w.pid);
    }
  }

  // Every worker reaped, every worker's group empty and the output drained (Note [Worker
  // states]). What a worker left in its group is stopped like a worker: SIGTERM once every
  // worker has exited (or at the teardown), SIGKILL after the grace period. A pipe still
  // held open after that, or once the groups are empty, is read for kDrainTime, then closed.
  bool finished() {
    if (anyRunning()) return false;
    noteEmptyGroups();
    if (anyGroupLeft()) {
      if (!tearingDown_) {
        router_.endLiveLine();
        log::info("launcher",
                  "every worker has exited; what they left in their process groups gets "
                  "SIGTERM, SIGKILL after the {} ms grace period",
                  spec_.gracePeriod.count());
        beginTeardown(SIGTERM);
      }
      if (!killed_) return false;  // killRemaining() at the end of the grace period
    } else if (!anyPipeOpen()) {
      return true;
    }
    if (!drainDeadline_) drainDeadline_ = Clock::now() + kDrainTime;
    if (Clock::now() < *drainDeadline_) return false;
    for (auto& w : workers_) {
      closePipe(w, Stream::kStdout);
      closePipe(w, Stream::kStderr);
    }
    return true;
  }

  void closePipe(Worker& w, Stream stream) {
    int& fd = stream == Stream::kStdout ? w.stdoutFd : w.stderrFd;
    if (fd < 0) return;
    router_.finish(w.localRank, stream);
    close(fd);
    fd = -1;
  }

  void pollOnce() {
    std::vector<pollfd> fds{{signals_.fd(), POLLIN, 0}};
    std::vector<std::pair<Worker*, Stream>> owners{{nullptr, Stream::kStdout}};
    for (auto& w : workers_) {
      if (w.stdoutFd >= 0) {
        fds.push_back({w.stdoutFd, POLLIN, 0});
        owners.emplace_back(&w, Stream::kStdout);
      }
      if (w.stderrFd >= 0) {
        fds.push_back({w.stderrFd, POLLIN, 0});
        owners.emplace_back(&w, Stream::kStderr);
      }
    }
    int timeoutMs = -1;
    auto until = [&](Clock::time_point t) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now());
      const int left = static_cast<int>(std::max<long long>(0, ms.count()) + 1);
      timeoutMs = timeoutMs < 0 ? left : std::min(timeoutMs, left);
    };
    if (tearingDown_ && !killed_) until(killDeadline_);
    if (drainDeadline_) until(*drainDeadline_);
    const bool leftoversWatched = std::any_of(
        workers_.begin(), workers_.end(),
        [](const Worker& w) { return w.state != WorkerState::kRunning && !w.groupGone; });
    if (leftoversWatched) until(Clock::now() + kGroupCheckInterval);
    if (monitor_ && !tearingDown_) until(nextMonitorCheck_);
    if (!tearingDown_) until(nextStoppedCheck_);
    // A partial line is shown once it has waited (Note [Live output] in output_router.h).
    if (const auto flush = router_.nextFlushTime()) until(*flush);
    const int ready = poll(fds.data(), fds.size(), timeoutMs);
    if (ready < 0) {
      if (errno == EINTR) return;
      throw std::system_error(errno, std::generic_category(), "poll");
    }
    // Output first, so that a worker's last lines precede the report of its exit.
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents) readPipe(*owners[i].first, owners[i].second);
    }
    router_.flushDue(Clock::now());
    if (!tearingDown_ && Clock::now() >= nextStoppedCheck_) killLongStoppedWorkers();
    if (fds[0].revents) {
      for (int signal : signals_.drain()) {
        if (signal == SIGCHLD) {
          onExits();
        } else {
          onLauncherSignal(signal);
        }
      }
    }
    checkMembership();
  }

  void checkMembership() {
    if (!monitor_ || tearingDown_ || Clock::now() < nextMonitorCheck_) return;
    nextMonitorCheck_ = Clock::now() + monitor_->interval;
    const std::string reason = monitor_->check();
    if (reason.empty()) return;
    router_.endLiveLine();
    log::warn("launcher", "membership changed: {}; stopping the workers to re-form the group",
              reason);
    result_.outcome = AttemptOutcome::kMembershipChanged;
    result_.membershipChange = reason;
    beginTeardown(SIGTERM);
  }

  void readPipe(Worker& w, Stream stream) {
    int fd = stream == Stream::kStdout ? w.stdoutFd : w.stderrFd;
    char buffer[65536];
    while (true) {
      const ssize_t n = read(fd, buffer, sizeof(buffer));
      if (n > 0) {
        router_.feed(w.localRank, stream, std::string_view(buffer, static_cast<size_t>(n)),
                     Clock::now());
        continue;
      }
      if (n < 0 && (errno == EINTR)) continue;
      if (n < 0 && errno == EAGAIN) return;
      closePipe(w, stream);  // EOF or an error: the stream is over
      return;
    }
  }

  void onExits() {
    for (const auto& status : reapExited()) {
      auto it = std::find_if(workers_.begin(), workers_.end(),
                             [&](const Worker& w) { return w.pid == status.pid; });
      if (it == workers_.end() || it->state != WorkerState::kRunning) continue;
      Worker& w = *it;
      w.status = status;
      // Drain what it wrote before it exited, so the report has its last lines.
      if (w.stdoutFd >= 0) readPipe(w, Stream::kStdout);
      if (w.stderrFd >= 0) readPipe(w, Stream::kStderr);
      router_.endLiveLine();
      if (tearingDown_) {
        w.state = status.succeeded() ? WorkerState::kSucceeded : WorkerState::kStopped;
        log::info("launcher", "rank={} pid={} stopped: {}", w.globalRank, w.pid, status.describe());
        continue;
      }
      if (status.succeeded()) {
        w.state = WorkerState::kSucceeded;
        log::debug("launcher", "rank={} pid={} exited code=0", w.globalRank, w.pid);
        if (allSucceeded()) {
          log::info("launcher", "all {} workers exited code=0", workers_.size());
        }
        continue;
      }
      w.state = WorkerState::kFailed;
      log::error("launcher", "rank={} pid={} failed: {}; tearing down the group", w.globalRank,
                 w.pid, status.describe());
      WorkerFailure failure;
      failure.globalRank = w.globalRank;
      failure.localRank = w.localRank;
      failure.pid = w.pid;
      failure.status = status;
      failure.restartCount = restartCount_;
      failure.lastLines = router_.lastLines(w.localRank);
      failure.time = std::chrono::system_clock::now();
      result_.outcome = AttemptOutcome::kWorkerFailed;
      result_.failure = std::move(failure);
      beginTeardown(SIGTERM);
    }
  }

  void onLauncherSignal(int signal) {
    router_.endLiveLine();
    if (result_.outcome == AttemptOutcome::kInterrupted) {
      // A second Ctrl-C: do not wait out the grace period.
      log::warn("launcher", "received {} again; killing the workers now", signalName(signal));
      killRemaining();
      return;
    }
    log::warn("launcher", "received {}; forwarding it to the workers (grace period {} ms)",
              signalName(signal), spec_.gracePeriod.count());
    result_.outcome = AttemptOutcome::kInterrupted;
    result_.signal = signal;
    if (tearingDown_) return;  // already stopping after a failure: keep that deadline
    beginTeardown(signal);
  }

  // `signal` to every worker's process group, those of exited workers with something left
  // in them included; SIGKILL at killDeadline_.
  void beginTeardown(int signal) {
    tearingDown_ = true;
    killDeadline_ = Clock::now() + spec_.gracePeriod;
    noteEmptyGroups();
    for (auto& w : workers_) {
      if (!w.groupGone) signalProcessGroup(w.pid, signal);
    }
    killStoppedWorkers();
  }

  void killRemaining() {
    killed_ = true;
    router_.endLiveLine();
    noteEmptyGroups();
    for (auto& w : workers_) {
      if (w.groupGone) continue;
      if (w.state == WorkerState::kRunning) {
        log::warn("launcher",
                  "rank={} pid={} still running after the {} ms grace period: "
                  "SIGKILL",
                  w.globalRank, w.pid, spec_.gracePeriod.count());
      } else {
        log::warn("launcher",
                  "rank={}: what it started in its process group outlived the {} ms grace "
                  "period; killing the group",
                  w.globalRank, spec_.gracePeriod.count());
      }
      signalProcessGroup(w.pid, SIGKILL);
    }
  }

  const WorkerGroupSpec& spec_;
  int restartCount_;
  SignalChannel& signals_;
  GroupGuardian& guardian_;
  const MembershipMonitor* monitor_;
  Clock::time_point nextMonitorCheck_ = Clock::now();
  Clock::time_point nextStoppedCheck_ = Clock::now();
  OutputRouter router_;
  std::vector<Worker> workers_;
  AttemptResult result_;
  bool tearingDown_ = false;
  bool killed_ = false;
  Clock::time_point killDeadline_;
  std::optional<Clock::time_point> drainDeadline_;
  nlohmann::json stacks_ = nlohmann::json::object();  // "rank" -> a stopped worker's stacks
  std::string errorFileDir_;  // <dir>/<local rank>/error.json: TORCHELASTIC_ERROR_FILE
  std::string ownErrorDir_;   // a temporary errorFileDir_ (no --log-dir), removed at the end
};

}  // namespace

bool isRetryable(const ExitStatus& status) {
  return status.signal != 0 || !isPermanentExitCode(status.exitCode);
}

AttemptResult runAttempt(const WorkerGroupSpec& spec, int restartCount, SignalChannel& signals,
                         GroupGuardian& guardian, const MembershipMonitor* monitor) {
  return Attempt(spec, restartCount, signals, guardian, monitor).run();
}

RunResult runWithRestarts(int maxRestarts, const AttemptRunner& runAttemptFn) {
  RunResult run;
  for (int restartCount = 0;; ++restartCount) {
    run.restarts = restartCount;
    const AttemptResult attempt = runAttemptFn(restartCount);
    if (attempt.outcome == AttemptOutcome::kSucceeded) {
      run.exitCode = kExitOk;
      run.failure.reset();  // an earlier attempt's failure was recovered from
      return run;
    }
    if (attempt.outcome == AttemptOutcome::kInterrupted) {
      run.signal = attempt.signal;
      run.failure = attempt.failure;
      run.exitCode = 128 + attempt.signal;
      return run;
    }
    run.failure = attempt.failure;
    const ExitStatus& status = attempt.failure->status;
    run.exitCode = status.shellCode();
    if (!isRetryable(status)) {
      log::error("launcher", "rank={} exited {} ({}): not restarting, a restart cannot fix it",
                 attempt.failure->globalRank, status.exitCode,
                 permanentExitMeaning(status.exitCode));
      return run;
    }
    if (restartCount >= maxRestarts) {
      log::error("launcher", "no restarts left ({} of --max-restarts={} used); giving up",
                 restartCount, maxRestarts);
      return run;
    }
    log::warn("launcher", "restarting the worker group: restart {} of {}", restartCount + 1,
              maxRestarts);
  }
}

}  // namespace ddp::launcher
