// The report of a failed run: which rank failed first, how, and its last lines; printed on
// the launcher's stderr and written as JSON to the error file (--error-file), e.g. the pod's
// /dev/termination-log, where `kubectl describe pod` shows it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "launcher/worker_group.h"

namespace ddp::launcher {

// {"rank", "localRank", "nodeRank", "host", "pid", "exitCode" (null after a signal),
//  "signal" (null after an exit), "signalName", "restartCount", "maxRestarts",
//  "launcherExitCode", "message", "error" (its error file's message, or null),
//  "consequences": ["rank N: ...", ...], "lastLines": [...], "timestamp" (UTC, ISO 8601)}
std::string failureReportJson(const WorkerFailure& failure, const LaunchPlan& plan,
                              int launcherExitCode);

// The human-readable block for stderr: one line per fact, then the last lines.
std::string failureReportText(const WorkerFailure& failure, int launcherExitCode);

// What a worker wrote to its TORCHELASTIC_ERROR_FILE (Note [The error file] in
// runtime/distributed.h; torchelastic's format, which a Python worker's @record writes too).
struct WorkerErrorRecord {
  std::string message;
  std::int64_t timeNs = 0;  // when it was written (unix ns; seconds' resolution from Python)
  bool peerLoss = false;    // it says a peer went away: a consequence of another failure
  std::string health;       // extraInfo.ddprun_health (the watchdog's verdict) as JSON, or ""
};
// nullopt when there is no file or it is not in that format.
std::optional<WorkerErrorRecord> readWorkerErrorFile(const std::string& path);

// Writes `json` to `path` (parent directories created). Returns an error text, "" on success.
std::string writeErrorFile(const std::string& path, const std::string& json);

}  // namespace ddp::launcher
