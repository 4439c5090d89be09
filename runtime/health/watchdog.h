// The watchdog: each rank's thread that publishes its heartbeat and ends the rank when the
// job is lost, whatever its training thread is blocked in.
//
// Note [Watchdog]
// ~~~~~~~~~~~~~~~
// Every `interval` each rank's watchdog thread sets its heartbeat (liveness.h's snapshot as
// JSON: step, phase, collective sequence number, its newest collectives, pid, host) under
// "ddprun/health/beat/<rank>" in rank 0's store, over a connection of its own (the training
// thread may be blocked in the store; c10d's client serializes its calls). Rank 0's watchdog
// is also the judge. It compares the heartbeats and publishes a verdict under
// "ddprun/health/verdict" on the first of:
//   failed  a rank wrote its error (noteFailure) and it is its own, not a lost peer;
//   desync  two ranks issued different collectives under one sequence number: a program
//           bug, exit kExitDesync on every rank;
//   dead    a rank's heartbeat stopped for `deadAfter` (killed, exited without a word, the
//           pod gone, or the whole process stopped: SIGSTOP); on rank 0's host it also
//           reads the process's state (gone, stopped);
//   hung    every rank still beats but none made progress (a step or a collective) for the
//           hang bound (Note [Hang bound]); the culprit is the rank behind in the collective
//           sequence, else the one not waiting in a collective.
// Each rank's watchdog reads the verdict every tick and ends its rank: it adds its flight
// recorder (c10d's, which Gloo and NCCL fill) to the store, writes the error file
// (Note [The error file] in runtime/distributed.h) with a "ddprun_health" section, waits
// for a checkpoint in progress to finish, and _exits (200, or kExitDesync): a Gloo thread
// blocked on a dead peer cannot be joined (Note [Leaving a failed group]). Rank 0 first
// gathers the other ranks' flight records, so its error file holds every reachable rank's.
// A hung culprit whose watchdog still runs adds its own threads' stacks (eu-stack).
// Without rank 0's store (rank 0 died or stopped) the others end with that as the verdict.
// A rank whose program ends normally publishes "finished"; rank 0 keeps its store up until
// the others have (bounded), so that no finishing rank mistakes the store's end for a loss.
//
// Note [Hang bound]
// ~~~~~~~~~~~~~~~~~
// Until every rank has finished a step (health::stepDone) hang detection is off: the
// rendezvous and first-collective timeouts bound the start. After it the bound is the
// explicit one (--hang-timeout, DDPRUN_HANG_TIMEOUT), else max(60 s, 10 x the slowest step
// any rank has seen). While a rank writes a checkpoint it is at least max(120 s, 10 x the
// slowest checkpoint so far). --collective-timeout remains the hard bound behind it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace ddp::health {

struct WatchdogOptions {
  int rank = 0;
  int worldSize = 1;
  std::string storeHost;  // rank 0's store (where ddp::init found it)
  std::uint16_t storePort = 0;
  std::chrono::milliseconds interval{1000};  // between two heartbeats
  // No heartbeat for this long: the rank is dead or frozen. Also the store operations'
  // timeout of the watchdog's connection.
  std::chrono::milliseconds deadAfter{5000};
  // Unset: calibrated from step times (Note [Hang bound]).
  std::optional<std::chrono::milliseconds> hangTimeout;
  // Where to also write the heartbeat for the launcher ("" = nowhere): DDPRUN_HEARTBEAT_FILE.
  std::string heartbeatFile;
  // The flight records come from ProcessGroupNCCL's recorder instead of Gloo's.
  bool ncclRecords = false;
};

// How many collectives c10d's flight recorder keeps unless TORCH_FR_BUFFER_SIZE or
// TORCH_NCCL_TRACE_BUFFER_SIZE says otherwise (ddp::init sets the first before the group).
constexpr int kFlightRecords = 64;

class Watchdog {
 public:
  // Connects to the store, publishes the first heartbeat and starts the thread.
  explicit Watchdog(const WatchdogOptions& options);
  // A normal end: publishes "finished" (rank 0 waits for the others, bounded) and stops.
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The running watchdog learns that this rank fails with `message` (its own error, or a
// peer's loss when `peerLoss`), publishes it, and stops acting on verdicts: the program
// exits by itself. Best effort, bounded; nothing without a watchdog.
void noteFailure(const std::string& message, bool peerLoss);

}  // namespace ddp::health
