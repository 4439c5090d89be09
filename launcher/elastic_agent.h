// The launcher's policy under --rdzv-backend c10d: one round of the rendezvous before each
// attempt, and a restart budget that counts failures, not membership changes.
//
// Note [Elastic restarts]
// ~~~~~~~~~~~~~~~~~~~~~~~
// As in torchrun, any change of membership restarts every worker: the group re-forms in a
// new round with the new world size, and the workers resume from their newest checkpoint.
//   round closes ──> attempt ──succeeded─────────────> finish(true), exit 0
//                       │ ──membership changed───────> next round (not counted)
//                       │ ──interrupted (SIGTERM...)─> exit 128+signal; the others re-form
//                       └──a worker failed───────────> next round, then decide:
//   A failure is a membership change when a member of the failed round is missing from
//   the next one (its node died or left: the workers failed because a peer vanished, not
//   through a fault of their own). Otherwise it counts against --max-restarts; with none
//   left, or with a permanent exit code, this node closes the job (finish(false)) and the
//   others stop at their next monitor check. Deciding after the next round, rather than by
//   waiting for a peer's heartbeat to go stale, keeps the death-to-first-step time down to
//   the last call: a killed node's peers see their collectives fail within a second.
#pragma once

#include <functional>

#include "launcher/launch_plan.h"
#include "launcher/node_rendezvous.h"
#include "launcher/worker_group.h"

namespace ddp::launcher {

// Runs one attempt with the plan of a round; runAttempt with a MembershipMonitor in
// production, scripted outcomes in tests.
using RoundAttemptRunner =
    std::function<AttemptResult(const LaunchPlan& roundPlan, int restartCount)>;

// `base` is the node's plan (nprocPerNode, maxRestarts, ...); each round fills in nodeRank,
// nnodes, the ranks and the master. Throws RendezvousFailed (join timeout, job closed by
// another node, the store's host gone).
RunResult runElastic(const LaunchPlan& base, NodeRendezvous& rendezvous,
                     const RoundAttemptRunner& runAttemptFn);

// The plan of one round (exposed for tests).
LaunchPlan planForRound(const LaunchPlan& base, const RendezvousRound& round);

}  // namespace ddp::launcher
