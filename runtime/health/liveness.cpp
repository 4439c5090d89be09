#include "runtime/health/liveness.h"

#include <array>
#include <atomic>
#include <mutex>

#include <c10/core/ScalarType.h>
#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "runtime/health/background_saves.h"
#include "runtime/log/logging.h"
#include "runtime/metrics/training_metrics.h"

// Note [Collective hooks across torch versions]: c10d's pre-hooks (Hooks.hpp,
// ProcessGroup::registerPreHook) are newer than torch 2.11, the oldest LibTorch ddprun builds
// against (tests/build/torch_compat_test.sh). Without them no collective is recorded: the
// watchdog's desync check compares empty logs (every rank agrees) and the allreduce bytes
// metric stays 0; everything else works alike. Feature-tested rather than version-tested:
// the header is the feature.
#if __has_include(<torch/csrc/distributed/c10d/Hooks.hpp>)
#include <torch/csrc/distributed/c10d/Hooks.hpp>
#define DDPRUN_C10D_HOOKS 1
#else
#define DDPRUN_C10D_HOOKS 0
#endif

namespace ddp::health {
namespace {

using Clock = std::chrono::steady_clock;

std::int64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

#if DDPRUN_C10D_HOOKS
// Our pre-hook's key among the group's hooks ("ddp" in ASCII).
constexpr std::int64_t kHookId = 0x646470;
#endif

// Note [Liveness]: the training thread writes, the watchdog reads.
struct State {
  std::atomic<std::int64_t> step{0};
  std::atomic<Phase> phase{Phase::kStarting};
  std::atomic<std::int64_t> phaseSinceNs{nowNs()};
  std::atomic<std::int64_t> lastStepNs{0};
  std::atomic<std::int64_t> slowestStepNs{0};
  std::atomic<std::int64_t> slowestCheckpointNs{0};

  std::mutex collectivesMutex;  // the hook's few stores, and the watchdog's copy
  std::uint64_t collectives = 0;
  std::array<CollectiveRecord, kCollectivesPublished> ring;
};

State& state() {
  static State s;
  return s;
}

void setPhase(Phase phase) {
  auto& s = state();
  const Phase before = s.phase.exchange(phase, std::memory_order_relaxed);
  const std::int64_t now = nowNs();
  const std::int64_t since = s.phaseSinceNs.exchange(now, std::memory_order_relaxed);
  metrics::recordPhaseTime(phaseName(before), std::chrono::nanoseconds(now - since));
  if (before == Phase::kCheckpoint && now - since > s.slowestCheckpointNs.load()) {
    s.slowestCheckpointNs.store(now - since, std::memory_order_relaxed);
  }
}

#if DDPRUN_C10D_HOOKS
std::string_view opName(c10d::HookOpName name) {
  using N = c10d::HookOpName;
  switch (name) {
    case N::SEND:
      return "send";
    case N::RECV:
      return "recv";
    case N::BROADCAST:
      return "broadcast";
    case N::ALLREDUCE:
      return "allreduce";
    case N::REDUCE:
      return "reduce";
    case N::ALLGATHER:
      return "allgather";
    case N::REDUCE_SCATTER:
      return "reduce_scatter";
    case N::ALLTOALL:
      return "alltoall";
    case N::BARRIER:
      return "barrier";
    case N::SCATTER:
      return "scatter";
    case N::GATHER:
      return "gather";
    case N::SPLIT:
      return "split";
    case N::NEW_WINDOW:
      return "new_window";
    case N::ALLREDUCE_COALESCED:
      return "allreduce_coalesced";
    case N::ALLGATHER_BASE:
      return "allgather_base";
    case N::ALLGATHER_COALESCED:
      return "allgather_coalesced";
    case N::ALLGATHER_INTO_TENSOR_COALESCED:
      return "allgather_into_tensor_coalesced";
    case N::REDUCE_SCATTER_BASE:
      return "reduce_scatter_base";
    case N::REDUCE_SCATTER_TENSOR_COALESCED:
      return "reduce_scatter_tensor_coalesced";
    case N::ALLTOALL_BASE:
      return "alltoall_base";
    case N::UNKNOWN:
      break;
  }
  return "unknown";
}

bool reducesGradients(c10d::HookOpName name) {
  using N = c10d::HookOpName;
  return name == N::ALLREDUCE || name == N::ALLREDUCE_COALESCED || name == N::ALLGATHER ||
         name == N::ALLGATHER_BASE || name == N::ALLGATHER_COALESCED ||
         name == N::ALLGATHER_INTO_TENSOR_COALESCED;
}

void onCollective(const c10d::PreHookArgs& args) {
  CollectiveRecord record;
  record.op = std::string(opName(args.name));
  for (const auto& tensor : args.input_tensors) {
    if (!tensor.defined()) continue;
    if (record.dtype.empty()) record.dtype = std::string(c10::toString(tensor.scalar_type()));
    record.numel += tensor.numel();
    // What DDP reduces: all-reduces, and the all-gathers its small CPU buckets take
    // (Note [Small buckets travel as one allgather] in
    // runtime/ddp/distributed_data_parallel.h).
    if (reducesGradients(args.name)) {
      metrics::recordAllreduceBytes(tensor.numel() *
                                    static_cast<std::int64_t>(tensor.element_size()));
    }
  }
  record.startedNs = nowNs();
  auto& s = state();
  std::lock_guard<std::mutex> lock(s.collectivesMutex);
  record.seq = ++s.collectives;
  s.ring[record.seq % s.ring.size()] = std::move(record);
}
#endif  // DDPRUN_C10D_HOOKS

}  // namespace

std::string_view phaseName(Phase phase) {
  switch (phase) {
    case Phase::kStarting:
      return "starting";
    case Phase::kTraining:
      return "training";
    case Phase::kData:
      return "data";
    case Phase::kForwardBackward:
      return "forward-backward";
    case Phase::kCommunication:
      return "communication";
    case Phase::kOptimizer:
      return "optimizer";
    case Phase::kCheckpoint:
      return "checkpoint";
    case Phase::kEvaluation:
      return "evaluation";
    case Phase::kFinished:
      return "finished";
  }
  return "unknown";
}

PhaseScope::PhaseScope(Phase phase) : previous_(state().phase.load(std::memory_order_relaxed)) {
  setPhase(phase);
}

PhaseScope::~PhaseScope() { setPhase(previous_); }

void stepDone(std::int64_t step) {
  auto& s = state();
  const std::int64_t now = nowNs();
  const std::int64_t last = s.lastStepNs.exchange(now, std::memory_order_relaxed);
  // The first step of a process has nothing to measure from: its time is the start's.
  if (last != 0 && now - last > s.slowestStepNs.load(std::memory_order_relaxed)) {
    s.slowestStepNs.store(now - last, std::memory_order_relaxed);
  }
  s.step.store(step, std::memory_order_relaxed);
  metrics::recordStep(step, std::chrono::nanoseconds(last != 0 ? now - last : 0));
}

std::string CollectiveRecord::describe() const { return fmt::format("#{} {}", seq, operation()); }

std::string CollectiveRecord::operation() const {
  return dtype.empty() ? op : fmt::format("{} {}[{}]", op, dtype, numel);
}

bool CollectiveRecord::sameCollective(const CollectiveRecord& other) const {
  return op == other.op && dtype == other.dtype && numel == other.numel;
}

Snapshot snapshot() {
  auto& s = state();
  const std::int64_t now = nowNs();
  Snapshot shot;
  shot.step = s.step.load(std::memory_order_relaxed);
  shot.stepping = s.lastStepNs.load(std::memory_order_relaxed) != 0;
  shot.phase = s.phase.load(std::memory_order_relaxed);
  shot.inPhase = std::chrono::nanoseconds(now - s.phaseSinceNs.load(std::memory_order_relaxed));
  shot.slowestStep = std::chrono::nanoseconds(s.slowestStepNs.load(std::memory_order_relaxed));
  shot.slowestCheckpoint =
      std::chrono::nanoseconds(s.slowestCheckpointNs.load(std::memory_order_relaxed));
  std::lock_guard<std::mutex> lock(s.collectivesMutex);
  shot.collectives = s.collectives;
  const std::uint64_t first = s.collectives > s.ring.size() ? s.collectives - s.ring.size() + 1 : 1;
  for (std::uint64_t seq = first; seq <= s.collectives; ++seq) {
    shot.recent.push_back(s.ring[seq % s.ring.size()]);
  }
  if (!shot.recent.empty()) {
    shot.sinceCollective = std::chrono::nanoseconds(now - shot.recent.back().startedNs);
  }
  return shot;
}

void attachCollectiveLog(const c10::intrusive_ptr<c10d::ProcessGroup>& group) {
#if DDPRUN_C10D_HOOKS
  group->registerPreHook(kHookId, onCollective);
#else
  (void)group;
  log::debug("watchdog",
             "event=no_collective_log reason=\"this torch's c10d has no collective hooks\" "
             "(Note [Collective hooks across torch versions])");
#endif
}

namespace {
std::atomic<int> backgroundSaves{0};
}  // namespace

BackgroundSave::BackgroundSave() { backgroundSaves.fetch_add(1); }
BackgroundSave::~BackgroundSave() { backgroundSaves.fetch_sub(1); }
bool savingInBackground() { return backgroundSaves.load() > 0; }

}  // namespace ddp::health
