#include "launcher/failure_report.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "runtime/error.h"

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
  report["error"] = nullptr;
  if (!failure.message.empty()) report["error"] = failure.message;
  report["consequences"] = failure.consequences;
  auto parsed = [](const std::string& text) {
    return text.empty() ? nlohmann::ordered_json(nullptr)
                        : nlohmann::ordered_json::parse(text, nullptr, false);
  };
  report["health"] = parsed(failure.health);
  report["heartbeats"] = parsed(failure.heartbeats);
  report["stacks"] = parsed(failure.stacks);
  report["lastLines"] = failure.lastLines;
  return report.dump(2) + "\n";
}

std::string failureReportText(const WorkerFailure& failure, int launcherExitCode) {
  std::string text = "ddprun: " + message(failure) + " (restart " +
                     std::to_string(failure.restartCount) + "); ddprun exits " +
                     std::to_string(launcherExitCode) + "\n";
  if (!failure.message.empty()) text += "ddprun: its error: " + failure.message + "\n";
  const auto health = nlohmann::json::parse(failure.health, nullptr, false);
  if (health.is_object() && health.contains("summary") && health["summary"].is_string()) {
    text += "ddprun: watchdog: " + health["summary"].get<std::string>() + "\n";
  }
  const auto stacks = nlohmann::json::parse(failure.stacks, nullptr, false);
  if (stacks.is_object()) {
    for (const auto& [rank, _] : stacks.items()) {
      text += "ddprun: the stacks of rank " + rank + " are in the error file (--error-file)\n";
    }
  }
  for (const auto& consequence : failure.consequences) {
    text += "ddprun: then (a consequence) " + consequence + "\n";
  }
  if (failure.lastLines.empty()) {
    text += "ddprun: rank " + std::to_string(failure.globalRank) + " printed nothing\n";
    return text;
  }
  text += "ddprun: last lines of rank " + std::to_string(failure.globalRank) + ":\n";
  for (const auto& line : failure.lastLines) text += "    " + line + "\n";
  return text;
}

std::optional<WorkerErrorRecord> readWorkerErrorFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  const auto data = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!data.is_object() || !data.contains("message")) return std::nullopt;
  const auto& outer = data["message"];
  WorkerErrorRecord record;
  const nlohmann::json* extra = nullptr;
  if (outer.is_string()) {
    record.message = outer.get<std::string>();
  } else if (outer.is_object() && outer.contains("message") && outer["message"].is_string()) {
    record.message = outer["message"].get<std::string>();
    if (outer.contains("extraInfo") && outer["extraInfo"].is_object()) extra = &outer["extraInfo"];
  } else {
    return std::nullopt;
  }
  auto integer = [&](const char* key) -> std::optional<std::int64_t> {
    if (!extra || !extra->contains(key)) return std::nullopt;
    const auto& value = (*extra)[key];
    if (value.is_number_integer()) return value.get<std::int64_t>();
    if (!value.is_string()) return std::nullopt;
    try {
      return std::stoll(value.get<std::string>());
    } catch (const std::exception&) {
      return std::nullopt;
    }
  };
  if (const auto ns = integer("ddprun_time_ns")) {
    record.timeNs = *ns;
  } else if (const auto seconds = integer("timestamp")) {
    record.timeNs = *seconds * 1'000'000'000;
  }
  if (extra && extra->contains("ddprun_health") && (*extra)["ddprun_health"].is_object()) {
    record.health = (*extra)["ddprun_health"].dump();
  }
  record.peerLoss =
      extra && extra->contains("ddprun_peer_loss") && (*extra)["ddprun_peer_loss"].is_boolean()
          ? (*extra)["ddprun_peer_loss"].get<bool>()
          : textSaysPeerLost(record.message);
  return record;
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
