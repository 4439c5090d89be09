// Exit codes of ddprun and ddptrain, chosen for the Kubeflow operators' ExitCode restart
// policy: 1-127 are permanent (the job fails), 128-255 retryable (the pod is recreated).
// Which error earns which: Note [Two error families] in runtime/error.h.
#pragma once

namespace ddp {

constexpr int kExitOk = 0;
// Bad flags, bad environment, bad config or data: retrying cannot help.
constexpr int kExitUsage = 2;
// A failure another attempt may not see: rendezvous timeout, lost peer, collective error.
constexpr int kExitTransient = 200;
// After SIGTERM (pod eviction, preemption) / SIGINT, as a shell reports them.
constexpr int kExitSigterm = 128 + 15;
constexpr int kExitSigint = 128 + 2;

}  // namespace ddp
