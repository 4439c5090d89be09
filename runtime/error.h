// The two error families of ddprun, and the exit code each one earns.
//
// Note [Two error families]
// ~~~~~~~~~~~~~~~~~~~~~~~~~
// Every error the project throws on purpose derives from ddp::Error through one of two
// families, and the family alone decides the exit code (exitCodeFor):
//
//   PermanentError  retrying cannot help; exit kExitUsage (2) or the error's own
//                   permanent code (3: training failed, 4: restarts exhausted), which
//                   the operators' ExitCode restart policy treats as final.
//                   ConfigError (options, timeouts, backend), env::EnvError (a variable),
//                   launcher::LaunchError (a flag), data::DataError (input files),
//                   models::ModelSpecError (a model that cannot be built),
//                   train::CheckpointMismatchError (a checkpoint of another model or
//                   optimizer: every restart would read it again), train::
//                   CheckpointUsageError (a --resume file that is not there, a checkpoint
//                   directory that cannot be written);
//                   train::TrainingFailedError, exit 3 (a non-finite loss, out of memory;
//                   std::bad_alloc too); train::RestartsExhaustedError, exit 4.
//   TransientError  another attempt may succeed; exit kExitTransient (200), retryable.
//                   rendezvous::RendezvousError (master unreachable), train::CheckpointError
//                   (checkpoint I/O, a corrupt file: the volume may recover, an older
//                   checkpoint may be used).
//
// Errors that are not ours are transient: c10::DistError (a collective timed out, a peer
// was lost) above all, and also anything unforeseen, because a retry that fails again
// costs one restart of the budget while a wrongly permanent exit ends a job that would
// have recovered. Checks of our own invariants stay TORCH_CHECK / TORCH_INTERNAL_ASSERT:
// they are bugs, not errors of the user.
//
// Plain C++ (no LibTorch): the launcher uses it too.
#pragma once

#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

#include "runtime/exit_codes.h"

namespace ddp {

// The root of the project's errors; throw one of the two families below, never this.
class Error : public std::runtime_error {
 protected:
  using std::runtime_error::runtime_error;
};

// See Note [Two error families]: retrying cannot help. `exitCode` is one of the permanent
// codes of exit_codes.h: kExitUsage unless said otherwise.
class PermanentError : public Error {
 public:
  explicit PermanentError(const std::string& what, int exitCode = kExitUsage)
      : Error(what), exitCode_(exitCode) {}
  int exitCode() const noexcept { return exitCode_; }

 private:
  int exitCode_;
};

// See Note [Two error families]: another attempt may succeed.
class TransientError : public Error {
 public:
  using Error::Error;
};

// A configuration that cannot work here: an option out of range, an unknown backend,
// NCCL without CUDA, a bad timeout or log level.
class ConfigError : public PermanentError {
 public:
  using PermanentError::PermanentError;
};

// Whether an error's text says a peer went away (a connection closed or reset by it, a wait
// for it that timed out, as Gloo and c10d word it): the failure is a consequence of
// another rank's (Note [The error file] in runtime/distributed.h). The launcher reads it
// in a worker's error file, where only the text crossed.
inline bool textSaysPeerLost(std::string_view what) noexcept {
  for (std::string_view sign : {"Connection closed by peer", "Connection reset by peer",
                                "Timed out waiting", "Broken pipe"}) {
    if (what.find(sign) != std::string_view::npos) return true;
  }
  return false;
}

// The exit code for an error that ends a process (Note [Two error families]).
inline int exitCodeFor(const std::exception& error) noexcept {
  if (const auto* permanent = dynamic_cast<const PermanentError*>(&error)) {
    return permanent->exitCode();
  }
  // Out of host memory: the same input at the same size fails again.
  if (dynamic_cast<const std::bad_alloc*>(&error) != nullptr) return kExitTrainingFailed;
  return kExitTransient;
}

}  // namespace ddp
