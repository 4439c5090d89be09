// The report of a failed run: which rank failed first, how, and its last lines; printed on
// the launcher's stderr and written as JSON to the error file (--error-file), e.g. the pod's
// /dev/termination-log, where `kubectl describe pod` shows it.
#pragma once

#include <string>

#include "launcher/worker_group.h"

namespace ddp::launcher {

// {"rank", "localRank", "nodeRank", "host", "pid", "exitCode" (null after a signal),
//  "signal" (null after an exit), "signalName", "restartCount", "maxRestarts",
//  "launcherExitCode", "message", "lastLines": [...], "timestamp" (UTC, ISO 8601)}
std::string failureReportJson(const WorkerFailure& failure, const LaunchPlan& plan,
                              int launcherExitCode);

// The human-readable block for stderr: one line per fact, then the last lines.
std::string failureReportText(const WorkerFailure& failure, int launcherExitCode);

// Writes `json` to `path` (parent directories created). Returns an error text, "" on success.
std::string writeErrorFile(const std::string& path, const std::string& json);

}  // namespace ddp::launcher
