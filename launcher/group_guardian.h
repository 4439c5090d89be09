// Mechanism: a small process that kills the workers' process groups when the launcher dies,
// however it dies.
//
// Note [Nothing outlives the launcher]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// A worker is started as the leader of a process group of its own (Note [Worker
// processes]), so whatever it starts (a shell's background job, a data loader, a helper it
// forks) is in that group unless it leaves it. Three ways the launcher can go:
//   - it stops the attempt itself: SIGTERM to every group, SIGKILL after the grace period
//     (Note [Worker states]), the groups of workers that already exited included;
//   - it dies without stopping it (SIGKILL, the OOM killer, a crash, an exception on the
//     way out): PR_SET_PDEATHSIG kills the workers, its direct children, but reaches no
//     further. The guardian covers this case: forked early, while the launcher has one
//     thread, it holds the read end of a pipe whose only write end the launcher holds
//     (close-on-exec, so no worker inherits it). The launcher writes each group it starts
//     (watch) and each group it has seen empty (forget); when the pipe reads EOF, the
//     launcher is gone and the guardian SIGKILLs every group it still watches, then exits.
//     It ignores the terminal's signals (SIGINT, SIGHUP, SIGTSTP, ...), which reach it
//     with the launcher's process group: a Ctrl-C must not leave the launcher unguarded.
//   - the launcher also adopts (PR_SET_CHILD_SUBREAPER) what a worker leaves behind when it
//     exits, and reaps it, so an empty group is seen as empty, not kept alive by zombies.
// What escapes: a process that leaves its group (setsid(), setpgid() to another group, a
// daemon that double-forks into a new session) is not signalled by any of these; a
// container's end (pod deletion) still kills it. Group ids are only signalled while the
// launcher knows the group to be in use, or, for the guardian, until it is forgotten: a
// group id is reused only after its last member is gone and the kernel has cycled
// through the pid space.
#pragma once

#include <sys/types.h>

namespace ddp::launcher {

class GroupGuardian {
 public:
  // The name the guardian carries in `ps` and /proc/<pid>/comm (at most 15 characters).
  static constexpr const char* kProcessName = "ddprun-guardian";

  // Forks the guardian. Call before any other thread exists. Throws std::system_error when
  // the pipe or the fork fails.
  GroupGuardian();
  // Closes the pipe (the guardian kills what it still watches and exits) and reaps it.
  ~GroupGuardian();
  GroupGuardian(const GroupGuardian&) = delete;
  GroupGuardian& operator=(const GroupGuardian&) = delete;

  // The guardian kills process group `pgid` if the launcher dies before forget(pgid).
  void watch(pid_t pgid);
  void forget(pid_t pgid);

  pid_t pid() const { return pid_; }

 private:
  void send(int op, pid_t pgid);

  pid_t pid_ = -1;
  int fd_ = -1;        // the write end of the pipe
  bool lost_ = false;  // the guardian is gone (said once in the log)
};

}  // namespace ddp::launcher
