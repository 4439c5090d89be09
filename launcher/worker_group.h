// The launcher's data and policy: the workers of this node, one attempt of running them,
// and the restart budget across attempts. (Mechanism: worker_process.h.)
//
// Note [Worker states]
// ~~~~~~~~~~~~~~~~~~~~
//   kRunning ──exit 0──────────────────────────────> kSucceeded
//      │ ──exit != 0 or a signal, first of the group─> kFailed   (tears the group down)
//      └──exit after the launcher's SIGTERM/SIGKILL──> kStopped
// An attempt ends when every worker has left kRunning, every worker's process group is
// empty and the output is drained:
//   all kSucceeded                         -> AttemptOutcome::kSucceeded
//   one kFailed (the first exit noticed)   -> kWorkerFailed: SIGTERM to every worker's
//                                             process group, SIGKILL after the grace period
//   SIGTERM/SIGINT/SIGHUP to the launcher  -> kInterrupted: the same signal to every
//                                             worker's group, SIGKILL after the grace period
// A group outlives its worker when the worker left something running in it (a helper, a
// background job): once every worker has exited, such leftovers get SIGTERM too, and SIGKILL
// after the grace period, the same as a worker (Note [Nothing outlives the launcher]).
// Policy (runWithRestarts): a failed attempt is retried with the restart count + 1 while
// restarts remain, unless the worker exited a permanent code (2, 3, 4, 5: isPermanentExitCode)
// that a restart cannot fix. Workers resume from their newest checkpoint (--resume auto).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "launcher/group_guardian.h"
#include "launcher/launch_plan.h"
#include "launcher/output_router.h"
#include "launcher/worker_process.h"
#include "runtime/metrics/node_monitor.h"

namespace ddp::launcher {

enum class WorkerState { kRunning, kSucceeded, kFailed, kStopped };

struct Worker {
  int localRank = 0;
  int globalRank = 0;
  pid_t pid = -1;
  WorkerState state = WorkerState::kRunning;
  ExitStatus status;
  int stdoutFd = -1;
  int stderrFd = -1;
  // Its process group (id: pid) was seen empty after it exited: never signalled again.
  bool groupGone = false;
  // Since when it has been seen stopped (SIGSTOP), while it is.
  std::optional<std::chrono::steady_clock::time_point> stoppedSince;
};

struct WorkerGroupSpec {
  LaunchPlan plan;
  std::vector<std::string> argv;
  WorkerEnvOptions env;  // restartCount is set per attempt
  std::chrono::milliseconds gracePeriod{30000};
  OutputOptions output;
  // Told of each attempt's workers, for /metrics and the probes; may be null.
  metrics::NodeMonitor* monitor = nullptr;
};

// The first worker that failed in an attempt.
struct WorkerFailure {
  int globalRank = 0;
  int localRank = 0;
  pid_t pid = -1;
  ExitStatus status;
  int restartCount = 0;
  std::vector<std::string> lastLines;
  std::chrono::system_clock::time_point time;
  // Its own words, from its error file (Note [The error file] in runtime/distributed.h);
  // empty when it wrote none.
  std::string message;
  // The other ranks of the attempt that failed after it, "rank N: <their message>".
  std::vector<std::string> consequences;
  // The watchdogs' verdict (Note [Watchdog] in runtime/health/watchdog.h) as JSON: culprit,
  // step, phase, summary, flight records; "" when no watchdog gave one.
  std::string health;
  // Each local worker's last heartbeat (JSON, "rank" -> beat) and, for a worker found
  // stopped at the teardown, its threads' stacks ("rank" -> eu-stack's text).
  std::string heartbeats;
  std::string stacks;
};

// kMembershipChanged: the monitor (c10d rendezvous) said the group must re-form; the workers
// were stopped like at a failure (SIGTERM, SIGKILL after the grace period).
enum class AttemptOutcome { kSucceeded, kWorkerFailed, kInterrupted, kMembershipChanged };

struct AttemptResult {
  AttemptOutcome outcome = AttemptOutcome::kSucceeded;
  std::optional<WorkerFailure> failure;  // kWorkerFailed
  int signal = 0;                        // kInterrupted: what the launcher received
  std::string membershipChange;          // kMembershipChanged: why
};

// Asked every `interval` while the workers run and no teardown has begun: a non-empty
// answer stops them with kMembershipChanged (NodeRendezvous::membershipChange()).
struct MembershipMonitor {
  std::chrono::milliseconds interval{100};  // torchrun's --monitor-interval default, 0.1 s
  std::function<std::string()> check;
};

struct RunResult {
  int exitCode = 0;
  int restarts = 0;                      // attempts - 1
  std::optional<WorkerFailure> failure;  // the first failure of the last failed attempt
  int signal = 0;
};

// Runs the workers once (see Note [Worker states]). `signals` must exist before any worker
// starts, so that no exit or signal is missed; `guardian` watches each worker's group.
AttemptResult runAttempt(const WorkerGroupSpec& spec, int restartCount, SignalChannel& signals,
                         GroupGuardian& guardian, const MembershipMonitor* monitor = nullptr);

// The restart policy over attempts; runAttempt in production, scripted outcomes in tests.
using AttemptRunner = std::function<AttemptResult(int restartCount)>;
RunResult runWithRestarts(int maxRestarts, const AttemptRunner& runAttemptFn);

// Whether a failure may be retried: anything but the permanent codes (isPermanentExitCode).
bool isRetryable(const ExitStatus& status);

}  // namespace ddp::launcher
