// The stacks of every thread of a process, for the failure report of a hung rank.
// Plain C++ (the launcher, which never links LibTorch, uses it too).
#pragma once

#include <chrono>
#include <string>

namespace ddp::health {

// `eu-stack -p <pid>` (Debian's elfutils; it attaches with ptrace, which works on a stopped
// process too), cut to `maxBytes`, given at most `timeout`. On failure a line saying why
// (eu-stack missing, no permission, the process gone), never an exception.
std::string threadStacks(int pid, std::chrono::seconds timeout = std::chrono::seconds(10),
                         std::size_t maxBytes = 64 * 1024);

// The state letter of /proc/<pid>/stat ('R', 'S', 'D', 'T' stopped, 'Z'), or '\0' when the
// process is gone.
char processState(int pid);

}  // namespace ddp::health
