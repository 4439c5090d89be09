#include "launcher/elastic_agent.h"

#include <algorithm>

#include "runtime/exit_codes.h"
#include "runtime/log/logging.h"

namespace ddp::launcher {
namespace {

// Members of `before` that are not in `after`.
std::vector<std::string> departed(const std::vector<std::string>& before,
                                  const std::vector<std::string>& after) {
  std::vector<std::string> gone;
  for (const auto& node : before) {
    if (std::find(after.begin(), after.end(), node) == after.end()) gone.push_back(node);
  }
  return gone;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ",") + name;
  return out;
}

}  // namespace

LaunchPlan planForRound(const LaunchPlan& base, const RendezvousRound& round) {
  LaunchPlan plan = base;
  plan.nodeRank = round.nodeRank;
  plan.nnodes = round.nnodes;
  plan.firstGlobalRank = round.firstGlobalRank;
  plan.totalWorkers = round.worldSize;
  plan.masterAddr = round.masterAddr;
  plan.masterPort = round.masterPort;
  return plan;
}

RunResult runElastic(const LaunchPlan& base, NodeRendezvous& rendezvous,
                     const RoundAttemptRunner& runAttemptFn) {
  RunResult run;
  int failures = 0;
  std::optional<WorkerFailure> pendingFailure;  // decided once the next round is known
  std::vector<std::string> previousMembers;
  while (true) {
    RendezvousRound round;
    try {
      round = rendezvous.nextRound();
    } catch (const std::exception& e) {
      if (!pendingFailure) throw;
      // The workers' failure came first: the report and --error-file name it.
      log::error("launcher", "the group cannot re-form after rank {} failed: {}",
                 pendingFailure->globalRank, e.what());
      run.failure = pendingFailure;
      run.exitCode = pendingFailure->status.shellCode();
      return run;
    }
    if (pendingFailure) {
      const auto gone = departed(previousMembers, round.members);
      if (!gone.empty()) {
        log::info("launcher",
                  "rank={} failed after node(s) {} left the job: a membership change, not "
                  "counted against --max-restarts",
                  pendingFailure->globalRank, joined(gone));
      } else if (failures >= base.maxRestarts) {
        log::error("launcher", "no restarts left ({} of --max-restarts={} used); giving up",
                   failures, base.maxRestarts);
        rendezvous.finish(false, "node " + rendezvous.nodeId() +
                                     " has no restarts left after "
                                     "rank " +
                                     std::to_string(pendingFailure->globalRank) + " failed (" +
                                     pendingFailure->status.describe() + ")");
        return run;
      } else {
        ++failures;
        log::warn("launcher", "restarting the worker group: restart {} of {}", failures,
                  base.maxRestarts);
      }
      pendingFailure.reset();
    }
    const LaunchPlan plan = planForRound(base, round);
    log::info("launcher",
              "round={} node_rank={} nnodes={} world_size={} ranks={}..{} master={}:{} "
              "restart_count={}",
              round.round, plan.nodeRank, plan.nnodes, plan.worldSize(), plan.globalRank(0),
              plan.globalRank(plan.nprocPerNode - 1), plan.masterAddr, plan.masterPort, failures);
    const AttemptResult attempt = runAttemptFn(plan, failures);
    previousMembers = round.members;
    run.restarts = failures;
    switch (attempt.outcome) {
      case AttemptOutcome::kSucceeded:
        rendezvous.finish(true, "its workers succeeded in round " + std::to_string(round.round));
        run.exitCode = kExitOk;
        run.failure.reset();
        return run;
      case AttemptOutcome::kInterrupted:
        // Leaving is a membership change for the others: they re-form without this node.
        run.signal = attempt.signal;
        run.failure = attempt.failure;
        run.exitCode = 128 + attempt.signal;
        return run;
      case AttemptOutcome::kMembershipChanged:
        continue;
      case AttemptOutcome::kWorkerFailed:
        run.failure = attempt.failure;
        run.exitCode = attempt.failure->status.shellCode();
        if (!isRetryable(attempt.failure->status)) {
          log::error("launcher",
                     "rank={} exited {} ({}): not restarting, a restart cannot fix it; "
                     "closing the job",
                     attempt.failure->globalRank, attempt.failure->status.exitCode,
                     permanentExitMeaning(attempt.failure->status.exitCode));
          rendezvous.finish(false, "rank " + std::to_string(attempt.failure->globalRank) +
                                       " exited with the permanent code " +
                                       std::to_string(attempt.failure->status.exitCode));
          return run;
        }
        pendingFailure = attempt.failure;
        continue;
    }
  }
}

}  // namespace ddp::launcher
