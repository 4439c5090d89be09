// What this rank is doing, for the watchdog (watchdog.h) and the failure report.
//
// Note [Liveness]
// ~~~~~~~~~~~~~~~
// A rank that dies, stops or hangs is found by what the others no longer hear from it:
//   - the training thread marks its phase (PhaseScope: data, forward-backward,
//     communication, optimizer, checkpoint, evaluation) and each finished step (stepDone);
//   - every collective issued through the default group passes a pre-hook of c10d's
//     ProcessGroup (attachCollectiveLog), which numbers it and keeps its op, dtype and
//     element count: the collective sequence number the ranks must agree on;
//   - the watchdog thread reads all of this once a tick (snapshot()) and publishes it.
// Writers use relaxed atomics or a short mutex (the collective log): nothing here can block
// the training thread or make it wait for the watchdog.
//
// Trainer::fit marks its phases; a user's own loop calls health::stepDone(step) after each
// optimizer step (without it hang detection stays off: it calibrates on step times) and may
// hold PhaseScopes for a report that says where it stood.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <c10/util/intrusive_ptr.h>

namespace c10d {
class ProcessGroup;
}

namespace ddp::health {

enum class Phase : std::uint8_t {
  kStarting,         // before the first step: restoring, the first collectives
  kTraining,         // in the training loop, between the phases below (logging, signals)
  kData,             // waiting for the next batch
  kForwardBackward,  // forward, loss, backward (buckets reduce as gradients are ready)
  kCommunication,    // waiting for collectives to finish
  kOptimizer,        // the optimizer step, gradient clipping
  kCheckpoint,       // writing a checkpoint (the hang bound is longer: Note [Hang bound])
  kEvaluation,
  kFinished,  // the program is past its training loop
};
std::string_view phaseName(Phase phase);

// Marks a phase for its scope and restores the previous one after.
class PhaseScope {
 public:
  explicit PhaseScope(Phase phase);
  ~PhaseScope();
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  Phase previous_;
};

// The step count after an optimizer step (1 after the first). Measures the step's time
// (since the previous call) for the hang bound.
void stepDone(std::int64_t step);

// One collective as the pre-hook saw it.
struct CollectiveRecord {
  std::uint64_t seq = 0;       // 1 for the group's first collective
  std::string op;              // "allreduce", "broadcast", ...
  std::string dtype;           // of the first input tensor, "" without tensors (barrier)
  std::int64_t numel = 0;      // elements over all input tensors
  std::int64_t startedNs = 0;  // steady clock

  // "#12 allreduce Float[1000]"; operation() leaves out the number: "allreduce Float[1000]".
  std::string describe() const;
  std::string operation() const;
  // Two ranks' records of one sequence number describe the same collective.
  bool sameCollective(const CollectiveRecord& other) const;
};

// How many of the newest collectives the heartbeat carries (desync check, report).
constexpr std::size_t kCollectivesPublished = 16;

struct Snapshot {
  std::int64_t step = 0;
  bool stepping = false;  // this process has finished a step (stepDone)
  Phase phase = Phase::kStarting;
  std::chrono::steady_clock::duration inPhase{};      // since the phase began
  std::chrono::steady_clock::duration slowestStep{};  // over this process's steps
  std::chrono::steady_clock::duration slowestCheckpoint{};
  std::uint64_t collectives = 0;                          // issued so far
  std::chrono::steady_clock::duration sinceCollective{};  // since the last was issued
  std::vector<CollectiveRecord> recent;  // the newest, oldest first, at most kCollectivesPublished
};
Snapshot snapshot();

// Numbers and records every collective issued through `group` (its pre-hooks). ddp::init
// attaches it to the default group; attach it to no other group (one sequence).
void attachCollectiveLog(const c10::intrusive_ptr<c10d::ProcessGroup>& group);

}  // namespace ddp::health
