#include "launcher/worker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "runtime/env/cluster_env.h"
#include "runtime/exit_codes.h"

namespace ddp::launcher {
namespace {

[[noreturn]] void throwErrno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace

StartedProcess startProcess(const std::vector<std::string>& argv,
                            const std::map<std::string, std::string>& extraEnv) {
  auto environment = env::currentEnvironment();
  for (const auto& [key, value] : extraEnv) environment[key] = value;
  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::vector<std::string> envStrings;
  for (const auto& [key, value] : environment) envStrings.push_back(key + "=" + value);
  std::vector<char*> childArgv, childEnvp;
  for (const auto& a : argv) childArgv.push_back(const_cast<char*>(a.c_str()));
  childArgv.push_back(nullptr);
  for (auto& e : envStrings) childEnvp.push_back(e.data());
  childEnvp.push_back(nullptr);

  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) throwErrno("pipe");
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    throwErrno("pipe");
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throwErrno("fork");
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(kExitTransient);  // the launcher died before prctl
    const int devNull = open("/dev/null", O_RDONLY);
    if (devNull >= 0) dup2(devNull, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);  // dup2 clears O_CLOEXEC on the copies
    dup2(err[1], STDERR_FILENO);
    signal(SIGPIPE, SIG_DFL);  // ignored in the launcher, and SIG_IGN survives exec
    // The launcher's blocked signals (SignalChannel) would stay blocked across exec.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvpe(childArgv[0], childArgv.data(), childEnvp.data());
    const char* reason = std::strerror(errno);
    dprintf(STDERR_FILENO, "ddprun: cannot execute '%s': %s\n", childArgv[0], reason);
    _exit(127);
  }
  setpgid(pid, pid);  // also from the parent, so the group exists before we signal it
  close(out[1]);
  close(err[1]);
  fcntl(out[0], F_SETFL, fcntl(out[0], F_GETFL) | O_NONBLOCK);
  fcntl(err[0], F_SETFL, fcntl(err[0], F_GETFL) | O_NONBLOCK);
  return StartedProcess{pid, out[0], err[0]};
}

bool signalProcessGroup(pid_t pid, int signal) {
  // Never kill(pid) alone: once reaped, the pid may belong to an unrelated process. The
  // group id stays reserved while any member, a zombie leader included, is left.
  return kill(-pid, signal) == 0;
}

bool processGroupExists(pid_t pid) {
  // EPERM: a member we may not signal (a setuid program) is a member all the same.
  return kill(-pid, 0) == 0 || errno == EPERM;
}

SignalChannel::SignalChannel(std::vector<int> forwarded) {
  // A console that went away (ddprun ... | head) must not kill the launcher and, through
  // PR_SET_PDEATHSIG, the training: writes then fail with EPIPE and only the files get lines.
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&set_);
  sigaddset(&set_, SIGCHLD);
  for (int s : forwarded) sigaddset(&set_, s);
  if (sigprocmask(SIG_BLOCK, &set_, nullptr) != 0) throwErrno("sigprocmask");
  fd_ = signalfd(-1, &set_, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd_ < 0) throwErrno("signalfd");
}

SignalChannel::~SignalChannel() {
  if (fd_ >= 0) close(fd_);
  sigprocmask(SIG_UNBLOCK, &set_, nullptr);
}

std::vector<int> SignalChannel::drain() {
  std::vector<int> signals;
  signalfd_siginfo info;
  while (read(fd_, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
    signals.push_back(static_cast<int>(info.ssi_signo));
  }
  return signals;
}

std::string ExitStatus::describe() const {
  if (signal) return "signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  return "exit code " + std::to_string(exitCode);
}

std::vector<ExitStatus> reapExited() {
  std::vector<ExitStatus> exited;
  int status = 0;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    ExitStatus s;
    s.pid = pid;
    if (WIFSIGNALED(status)) {
      s.signal = WTERMSIG(status);
    } else {
      s.exitCode = WEXITSTATUS(status);
    }
    exited.push_back(s);
  }
  return exited;
}

}  // namespace ddp::launcher
