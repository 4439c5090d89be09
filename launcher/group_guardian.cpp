#include "launcher/group_guardian.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <system_error>

#include "runtime/log/logging.h"

namespace ddp::launcher {
namespace {

// One message on the pipe: 8 bytes, written whole (below PIPE_BUF, so never interleaved).
struct Message {
  std::int32_t op;
  std::int32_t pgid;
};
constexpr std::int32_t kWatch = 1;
constexpr std::int32_t kForget = 2;

// The signals a terminal or a job-control shell sends to the launcher's whole process
// group; the guardian outlives them (Note [Nothing outlives the launcher]).
constexpr int kIgnoredSignals[] = {SIGINT,  SIGTERM, SIGHUP,  SIGQUIT, SIGPIPE,
                                   SIGTSTP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};

// Reads one whole message; false at EOF (the launcher is gone) or on an error.
bool readMessage(int fd, Message& message) {
  auto* bytes = reinterpret_cast<char*>(&message);
  std::size_t have = 0;
  while (have < sizeof(message)) {
    const ssize_t n = read(fd, bytes + have, sizeof(message) - have);
    if (n > 0) {
      have += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return false;
    }
  }
  return true;
}

[[noreturn]] void guard(int readFd, pid_t launcher) {
  prctl(PR_SET_NAME, GroupGuardian::kProcessName);
  for (int s : kIgnoredSignals) signal(s, SIG_IGN);
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_UNBLOCK, &all, nullptr);
  // Nothing of the launcher's is held open but stderr, for the one line below: not its
  // console's stdin or stdout, nor any other descriptor.
  const int devNull = open("/dev/null", O_RDWR);
  if (devNull >= 0) {
    dup2(devNull, STDIN_FILENO);
    dup2(devNull, STDOUT_FILENO);
  }
  if (readFd > STDERR_FILENO + 1) close_range(STDERR_FILENO + 1, readFd - 1, 0);
  close_range(readFd + 1, ~0U, 0);

  std::set<pid_t> groups;
  Message message{};
  while (readMessage(readFd, message)) {
    if (message.op == kWatch) groups.insert(message.pgid);
    if (message.op == kForget) groups.erase(message.pgid);
  }
  for (pid_t pgid : groups) {
    if (kill(-pgid, SIGKILL) == 0) {
      dprintf(STDERR_FILENO,
              "%s: the launcher (pid %d) exited without stopping its workers; killed process "
              "group %d\n",
              GroupGuardian::kProcessName, static_cast<int>(launcher), static_cast<int>(pgid));
    }
  }
  _exit(0);
}

}  // namespace

GroupGuardian::GroupGuardian() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    throw std::system_error(errno, std::generic_category(), "the guardian's pipe");
  }
  const pid_t launcher = getpid();
  pid_ = fork();
  if (pid_ < 0) {
    const int error = errno;
    close(fds[0]);
    close(fds[1]);
    throw std::system_error(error, std::generic_category(), "fork of the guardian");
  }
  if (pid_ == 0) {
    close(fds[1]);
    guard(fds[0], launcher);
  }
  close(fds[0]);
  fd_ = fds[1];
  log::debug("launcher", "event=guardian_started pid={}", pid_);
}

GroupGuardian::~GroupGuardian() {
  close(fd_);
  // It exits as soon as it has read EOF (and killed what it still watched: normally nothing).
  // It may already have been reaped with the workers (reapExited): then ECHILD.
  while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
}

void GroupGuardian::watch(pid_t pgid) { send(kWatch, pgid); }

void GroupGuardian::forget(pid_t pgid) { send(kForget, pgid); }

void GroupGuardian::send(int op, pid_t pgid) {
  const Message message{op, static_cast<std::int32_t>(pgid)};
  ssize_t n;
  do {
    n = write(fd_, &message, sizeof(message));
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof(message)) || lost_) return;
  lost_ = true;  // SIGPIPE is ignored: EPIPE once the guardian has died
  log::warn("launcher",
            "the guardian (pid {}) is gone ({}): if ddprun is now killed with SIGKILL, what "
            "its workers started survives it. Workers are still stopped on a normal exit.",
            pid_, n < 0 ? std::strerror(errno) : "short write");
}

}  // namespace ddp::launcher
