// Mechanism: how one worker process is started, signalled and reaped, and how the launcher
// hears about exits and signals without polling.
//
// Note [Worker processes]
// ~~~~~~~~~~~~~~~~~~~~~~~
// - Each worker leads its own process group, so a signal to -pid reaches whatever it started
//   too (a shell wrapper, a data loader), and dies with the launcher (PR_SET_PDEATHSIG); what
//   it started dies with the launcher through the guardian (Note [Nothing outlives the
//   launcher] in group_guardian.h). Being in groups of their own, the workers do not get a
//   terminal's Ctrl-C directly: the launcher forwards it, once.
// - stdout and stderr are pipes to the launcher, which prefixes whole lines with the rank
//   (output_router.h); the child gets /dev/null as stdin.
// - The launcher blocks SIGCHLD and the signals it forwards (--signals-to-handle; SIGTERM,
//   SIGINT, SIGHUP and SIGQUIT by default) and reads them from a signalfd in the same poll()
//   as the pipes: an exit is noticed the moment it happens, and a signal never interrupts a
//   half-written line. The child starts with no signal blocked.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

namespace ddp::launcher {

struct StartedProcess {
  pid_t pid = -1;
  int stdoutFd = -1;  // read ends, non-blocking, close-on-exec
  int stderrFd = -1;
};

// Starts argv (argv[0] searched in PATH when it has no '/') with the launcher's environment
// plus `extraEnv`. Throws std::system_error when fork or a pipe fails; a program that cannot
// be executed exits 127 after saying why on its stderr.
StartedProcess startProcess(const std::vector<std::string>& argv,
                            const std::map<std::string, std::string>& extraEnv);

// kill(-pid, signal): the worker's whole process group. Returns false if it is gone.
bool signalProcessGroup(pid_t pid, int signal);

// Whether the process group `pid` still has a member (a zombie counts until it is reaped).
bool processGroupExists(pid_t pid);

// torchrun's default --signals-to-handle.
inline const std::vector<int> kDefaultForwardedSignals = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};

// Blocks SIGCHLD and `forwarded` and reads them from a signalfd (see the Note).
class SignalChannel {
 public:
  explicit SignalChannel(std::vector<int> forwarded = kDefaultForwardedSignals);
  ~SignalChannel();
  SignalChannel(const SignalChannel&) = delete;
  SignalChannel& operator=(const SignalChannel&) = delete;

  int fd() const { return fd_; }
  // The signals waiting (SIGCHLD and the forwarded ones), in arrival order; empty if none.
  std::vector<int> drain();

 private:
  sigset_t set_;
  int fd_ = -1;
};

// How a reaped process ended.
struct ExitStatus {
  pid_t pid = -1;
  int exitCode = 0;  // valid when signal == 0
  int signal = 0;    // the signal that killed it

  bool succeeded() const { return signal == 0 && exitCode == 0; }
  // 128 + signal for a signal, as a shell reports it; the exit code otherwise.
  int shellCode() const { return signal ? 128 + signal : exitCode; }
  std::string describe() const;  // "exit code 3" / "signal 9 (Killed)"
};

// Every child that has exited so far, without blocking.
std::vector<ExitStatus> reapExited();

}  // namespace ddp::launcher
