#include "runtime/health/stacks.h"

#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace ddp::health {

std::string threadStacks(int pid, std::chrono::seconds timeout, std::size_t maxBytes) {
  // Under Yama's ptrace_scope 1 a process may be traced by its ancestors only; our own
  // stacks come from a child, which this allows.
  if (pid == getpid()) prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
  const std::string command = "timeout -s KILL " + std::to_string(timeout.count()) +
                              " eu-stack -p " + std::to_string(pid) + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "(no stacks: cannot start eu-stack)";
  std::string out;
  char buffer[4096];
  std::size_t n = 0;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    if (out.size() < maxBytes) out.append(buffer, std::min(n, maxBytes - out.size()));
  }
  const int status = pclose(pipe);
  if (status != 0 && out.find("TID") == std::string::npos) {
    if (out.find("not found") != std::string::npos || WEXITSTATUS(status) == 127) {
      return "(no stacks: eu-stack is not installed; apt-get install elfutils)";
    }
    return "(no stacks: eu-stack -p " + std::to_string(pid) + " failed: " + out + ")";
  }
  if (out.size() >= maxBytes) out += "\n(cut at " + std::to_string(maxBytes) + " bytes)";
  return out;
}

char processState(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return '\0';
  // "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
  const auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return '\0';
  return line[close + 2];
}

}  // namespace ddp::health
