// Exit codes of ddprun and ddptrain, chosen for the Kubeflow operators' ExitCode restart
// policy: 1-127 are permanent (the job fails), 128-255 retryable (the pod is recreated).
// Which error earns which: Note [Two error families] in runtime/error.h.
#pragma once

namespace ddp {

constexpr int kExitOk = 0;
// Bad flags, bad environment, bad config or data, a checkpoint of another model, a
// directory that cannot be written: retrying cannot help.
constexpr int kExitUsage = 2;
// The training itself cannot go on: a non-finite loss, out of memory. Retrying would
// fail the same way at the same step.
constexpr int kExitTrainingFailed = 3;
// The restart budget is spent: several retryable failures in a row without a new
// checkpoint between them (Note [Restart budget] in runtime/train/run_journal.h).
constexpr int kExitRestartsExhausted = 4;
// Ranks issued different collectives under one sequence number (Note [Watchdog] in
// runtime/health/watchdog.h): a bug of the program, which a restart would repeat.
constexpr int kExitDesync = 5;
// A failure another attempt may not see: rendezvous timeout, lost peer, collective error.
constexpr int kExitTransient = 200;
// After SIGTERM (pod eviction, preemption) / SIGINT, as a shell reports them.
constexpr int kExitSigterm = 128 + 15;
constexpr int kExitSigint = 128 + 2;

// Whether `code` is one of the permanent codes above, which ddprun's own restarts do not
// retry either. Other codes below 128 (a Python script's 1) stay retryable by ddprun, as
// by torchrun; the operators' ExitCode policy treats every code in 1-127 as final.
constexpr bool isPermanentExitCode(int code) {
  return code == kExitUsage || code == kExitTrainingFailed || code == kExitRestartsExhausted ||
         code == kExitDesync;
}

// What a permanent code says, for the launcher's "not restarting" line.
constexpr const char* permanentExitMeaning(int code) {
  switch (code) {
    case kExitUsage:
      return "a usage, config or data error";
    case kExitTrainingFailed:
      return "the training failed";
    case kExitRestartsExhausted:
      return "the restart budget is spent";
    case kExitDesync:
      return "the ranks ran different collectives";
    default:
      return "a permanent error";
  }
}

}  // namespace ddp
