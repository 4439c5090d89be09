// The run journal: rank 0's record of every attempt of a run, next to its checkpoints,
// so that a restart budget outlives the pods (the operators recreate them; under
// restartPolicy ExitCode the training-operator ignores backoffLimit, kubeflow/trainer#2045).
//
// Note [Restart budget]
// ~~~~~~~~~~~~~~~~~~~~~
// dir/run-journal.jsonl holds one JSON object per attempt, oldest first:
//   attempt, started_at, ended_at, exit_code, cause, resumed_step, last_step,
//   checkpoint_step (the newest checkpoint when it ended)
// It is rewritten whole, atomically, when an attempt begins and when it ends. An attempt
// that never wrote its end (SIGKILL, the OOM killer, a lost node) is closed by the next
// one with exit_code null: a retryable failure.
// Stalled failures: counting back from the newest attempt, those that failed retryably
// (exit_code null or >= 128) without a checkpoint newer than the one they resumed from.
// Any attempt that checkpointed, finished or failed permanently ends the count: progress
// resets the budget. When an attempt fails retryably without a new checkpoint and
// `maxStalled` stalled failures precede it, it exits kExitRestartsExhausted (4) instead:
// permanent, so the job stops looping and says why.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace ddp::train {

// The restart budget is spent (Note [Restart budget]).
class RestartsExhaustedError : public PermanentError {
 public:
  explicit RestartsExhaustedError(const std::string& what)
      : PermanentError(what, kExitRestartsExhausted) {}
};

struct JournalEntry {
  int attempt = 0;
  std::string startedAt, endedAt;  // UTC, ISO 8601; endedAt "" while running
  std::optional<int> exitCode;     // nullopt: running, or ended without a record
  std::string cause;               // "" on success
  std::int64_t resumedStep = -1;   // -1: a fresh start
  std::int64_t lastStep = -1;
  std::int64_t checkpointStep = -1;

  bool ended() const { return !endedAt.empty(); }
  // A failure another attempt may not see, without a checkpoint newer than its start.
  bool stalledFailure() const;
};

class RunJournal {
 public:
  static constexpr const char* kFileName = "run-journal.jsonl";
  static constexpr std::size_t kMaxEntries = 200;  // older attempts are dropped

  // Reads dir/run-journal.jsonl (absent: empty). A line that does not parse is dropped
  // with a warning: the journal is advice, never a reason not to train.
  explicit RunJournal(std::string dir, unsigned fileMode = 0640);

  // Closes an attempt left open by a process that died, then records this one.
  void begin(std::int64_t resumedStep);
  // Records how this attempt ended.
  void end(int exitCode, const std::string& cause, std::int64_t lastStep,
           std::int64_t checkpointStep);

  // Stalled failures just before this attempt (Note [Restart budget]).
  int stalledFailuresBefore() const;
  const std::vector<JournalEntry>& entries() const { return entries_; }
  std::string path() const;

 private:
  std::string dir_;
  unsigned fileMode_;
  std::vector<JournalEntry> entries_;

  void write() const;
};

}  // namespace ddp::train
