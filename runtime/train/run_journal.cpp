#include "runtime/train/run_journal.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/log/logging.h"
#include "runtime/train/checkpointer.h"

namespace ddp::train {
namespace fs = std::filesystem;
namespace {

const char* kTimeFormat = "%Y-%m-%dT%H:%M:%SZ";

nlohmann::json toJson(const JournalEntry& e) {
  return {{"attempt", e.attempt},
          {"started_at", e.startedAt},
          {"ended_at", e.endedAt.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.endedAt)},
          {"exit_code", e.exitCode ? nlohmann::json(*e.exitCode) : nlohmann::json(nullptr)},
          {"cause", e.cause},
          {"resumed_step", e.resumedStep},
          {"last_step", e.lastStep},
          {"checkpoint_step", e.checkpointStep}};
}

JournalEntry fromJson(const nlohmann::json& j) {
  JournalEntry e;
  e.attempt = j.at("attempt").get<int>();
  e.startedAt = j.at("started_at").get<std::string>();
  if (!j.at("ended_at").is_null()) e.endedAt = j.at("ended_at").get<std::string>();
  if (!j.at("exit_code").is_null()) e.exitCode = j.at("exit_code").get<int>();
  e.cause = j.at("cause").get<std::string>();
  e.resumedStep = j.at("resumed_step").get<std::int64_t>();
  e.lastStep = j.at("last_step").get<std::int64_t>();
  e.checkpointStep = j.at("checkpoint_step").get<std::int64_t>();
  return e;
}

}  // namespace

bool JournalEntry::stalledFailure() const {
  const bool retryable = !exitCode || *exitCode >= 128;
  return retryable && checkpointStep <= resumedStep;
}

RunJournal::RunJournal(std::string dir, unsigned fileMode)
    : dir_(std::move(dir)), fileMode_(fileMode) {
  std::ifstream in(path());
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    try {
      entries_.push_back(fromJson(nlohmann::json::parse(line)));
    } catch (const nlohmann::json::exception& e) {
      log::warn("journal", "event=line_ignored path={} line={} ({})", path(), number, e.what());
    }
  }
}

std::string RunJournal::path() const { return (fs::path(dir_) / kFileName).string(); }

void RunJournal::begin(std::int64_t resumedStep) {
  if (!entries_.empty() && !entries_.back().ended()) {
    auto& lost = entries_.back();
    lost.endedAt = "unknown";
    // What it saved before it died shows in where this attempt resumes.
    lost.checkpointStep = std::max(lost.checkpointStep, resumedStep);
    lost.cause = "ended without a record (killed: SIGKILL, the OOM killer, a lost node?)";
    log::warn("journal", "event=attempt_lost attempt={} started_at={} {}", lost.attempt,
              lost.startedAt, lost.cause);
  }
  JournalEntry entry;
  entry.attempt = entries_.empty() ? 1 : entries_.back().attempt + 1;
  entry.startedAt = utcTimestamp(kTimeFormat);
  entry.resumedStep = resumedStep;
  entry.lastStep = entry.checkpointStep = resumedStep;
  entries_.push_back(entry);
  if (entries_.size() > kMaxEntries) {
    entries_.erase(entries_.begin(), entries_.end() - kMaxEntries);
  }
  write();
}

void RunJournal::end(int exitCode, const std::string& cause, std::int64_t lastStep,
                     std::int64_t checkpointStep) {
  if (entries_.empty()) return;
  auto& entry = entries_.back();
  entry.endedAt = utcTimestamp(kTimeFormat);
  entry.exitCode = exitCode;
  entry.cause = cause;
  entry.lastStep = lastStep;
  entry.checkpointStep = checkpointStep;
  write();
}

int RunJournal::stalledFailuresBefore() const {
  int stalled = 0;
  auto it = entries_.rbegin();
  if (it != entries_.rend()) ++it;  // the newest entry is this attempt's own
  for (; it != entries_.rend() && it->stalledFailure(); ++it) ++stalled;
  return stalled;
}

void RunJournal::write() const {
  std::string text;
  for (const auto& entry : entries_) text += toJson(entry).dump() + "\n";
  writeFileAtomically(path(), text.data(), text.size(), fileMode_);
}

}  // namespace ddp::train
