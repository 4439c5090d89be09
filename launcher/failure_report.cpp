#include "launcher/failure_report.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

namespace ddp::launcher {
namespace {

std::string hostName() {
  char name[256] = {};
  return gethostname(name, sizeof(name) - 1) == 0 ? std::string(name) : std::string("unknown");
}

std::string isoTime(std::chrono::system_clock::time_point time) {
  const std::time_t t = std::chrono::system_clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string message(const WorkerFailure& failure) {
  return "rank " + std::to_string(failure.globalRank) + " (local rank " +
         std::to_string(failure.localRank) + ", pid " + std::to_string(failure.pid) +
         ") failed first: " + failure.status.describe();
}

}  // namespace

std::string failureReportJson(const WorkerFailure& failure, const LaunchPlan& plan,
                              int launcherExitCode) {
  nlohmann::ordered_json report;
  report["message"] = message(failure);
  report["rank"] = failure.globalRank;
  report["localRank"] = failure.localRank;
  report["nodeRank"] = plan.nodeRank;
  report["host"] = hostName();
  report["pid"] = failure.pid;
  // exitCode and signal: one of the two is null, as a process either exits or is killed.
  report["exitCode"] = nullptr;
  report["signal"] = nullptr;
  report["signalName"] = nullptr;
  if (failure.status.signal) {
    report["signal"] = failure.status.signal;
    report["signalName"] = strsignal(failure.status.signal);
  } else {
    report["exitCode"] = failure.status.exitCode;
  }
  report["restartCount"] = failure.restartCount;
  report["maxRestarts"] = plan.maxRestarts;
  report["launcherExitCode"] = launcherExitCode;
  report["timestamp"] = isoTime(failure.time);
  report["lastLines"] = failure.lastLines;
  return report.dump(2) + "\n";
}

std::string failureReportText(const WorkerFailure& failure, int launcherExitCode) {
  std::string text = "ddprun: " + message(failure) + " (restart " +
                     std::to_string(failure.restartCount) + "); ddprun exits " +
                     std::to_string(launcherExitCode) + "\n";
  if (failure.lastLines.empty()) {
    text += "ddprun: rank " + std::to_string(failure.globalRank) + " printed nothing\n";
    return text;
  }
  text += "ddprun: last lines of rank " + std::to_string(failure.globalRank) + ":\n";
  for (const auto& line : failure.lastLines) text += "    " + line + "\n";
  return text;
}

std::string writeErrorFile(const std::string& path, const std::string& json) {
  std::error_code ec;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::ofstream out(path, std::ios::trunc);
  if (out) out << json;
  if (!out) return "cannot write the error file " + path + ": " + std::strerror(errno);
  return "";
}

}  // namespace ddp::launcher
