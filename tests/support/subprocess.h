// Starting and reaping child processes in tests: the multi-process tests start real
// ranks (separate executables) and check how each one ended and what it printed.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ddp::testing {

struct ProcessResult {
  int exitCode = -1;   // valid when termSignal == 0
  int termSignal = 0;  // the signal that killed it, 0 if it exited
  bool timedOut = false;
  std::string output;  // stdout and stderr together
};

class ChildProcess {
 public:
  // Starts argv[0] (a path) with the current environment plus `env` (which overrides).
  // stdout and stderr go to a temporary file read back by wait().
  ChildProcess(std::vector<std::string> argv, std::map<std::string, std::string> env);
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();  // kills the child if it is still running

  // Waits up to `timeout`; on expiry the child is killed with SIGKILL and timedOut set.
  ProcessResult wait(std::chrono::milliseconds timeout);
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  std::string outputPath_;
  bool reaped_ = false;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read, close).
std::uint16_t findFreePort();

// Directory of the running test executable (helpers are built beside it).
std::string executableDir();

}  // namespace ddp::testing
