#include "runtime/metrics/process_stats.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace ddp::metrics {
namespace {

// The system's boot time (btime in /proc/stat), for a process's start time.
double bootUnix() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime" && in >> value) return value;
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return 0;
}

}  // namespace

std::optional<ProcessStats> readProcessStats(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid);
  std::ifstream statFile(dir + "/stat");
  std::string stat;
  if (!statFile || !std::getline(statFile, stat)) return std::nullopt;
  // The command name (field 2) may hold spaces and parentheses: fields count from the
  // last ')'. After it: state (3), ..., utime (14), stime (15), ..., starttime (22),
  // vsize (23), rss (24, pages).
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  ProcessStats s;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  for (int index = 3; fields >> field; ++index) {
    if (index == 14 || index == 15) s.cpuSeconds += std::stod(field) / ticks;
    if (index == 22) s.startUnix = bootUnix() + std::stod(field) / ticks;
    if (index == 23) s.virtualBytes = std::stoll(field);
    if (index == 24) {
      s.residentBytes = std::stoll(field) * sysconf(_SC_PAGESIZE);
      break;
    }
  }
  std::error_code error;
  for (auto it = std::filesystem::directory_iterator(dir + "/fd", error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    ++s.openFds;
  }
  return s;
}

}  // namespace ddp::metrics
