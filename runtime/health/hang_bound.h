// Note [Hang bound] (watchdog.h) as one function: the watchdog's judge and the /healthz
// probe (runtime/metrics/exposition.h) must call a group hung at the same moment.
// Plain C++: the launcher, which never links LibTorch, uses it too.
#pragma once

#include <algorithm>
#include <chrono>

namespace ddp::health {

constexpr auto kMinHangBound = std::chrono::seconds(60);
constexpr auto kMinCheckpointBound = std::chrono::seconds(120);
constexpr int kStepsPerBound = 10;  // the bound is this many slowest steps

// Seconds without progress after which a group that has stepped is hung: the explicit
// bound when > 0, else max(60 s, 10 x the slowest step); while a rank writes a checkpoint,
// at least max(120 s, 10 x the slowest checkpoint).
inline double hangBoundSeconds(double explicitSeconds, double slowestStepSeconds,
                               double slowestCheckpointSeconds, bool checkpointing) {
  using Seconds = std::chrono::duration<double>;
  double bound = explicitSeconds > 0 ? explicitSeconds
                                     : std::max(Seconds(kMinHangBound).count(),
                                                kStepsPerBound * slowestStepSeconds);
  if (checkpointing) {
    bound = std::max(
        {bound, Seconds(kMinCheckpointBound).count(), kStepsPerBound * slowestCheckpointSeconds});
  }
  return bound;
}

}  // namespace ddp::health
