// The standard process_* metrics of a process, read from /proc/<pid> (Linux), so that the
// launcher reports them for every worker, a Python script's included.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

namespace ddp::metrics {

struct ProcessStats {
  double cpuSeconds = 0;  // user + system
  std::int64_t residentBytes = 0;
  std::int64_t virtualBytes = 0;
  std::int64_t openFds = 0;
  double startUnix = 0;  // when it started, seconds since the epoch
};

// std::nullopt when the process is gone (or /proc is not readable).
std::optional<ProcessStats> readProcessStats(pid_t pid);

}  // namespace ddp::metrics
