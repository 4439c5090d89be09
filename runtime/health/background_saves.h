// Saves still being written in the background (Note [Asynchronous saves], checkpointer.h):
// the watchdog's exit finishes them first, as it finishes a checkpoint phase
// (Note [Watchdog]). Apart from liveness.h, which most of the tree includes.
#pragma once

namespace ddp::health {

// Marks one background save for its lifetime.
class BackgroundSave {
 public:
  BackgroundSave();
  ~BackgroundSave();
  BackgroundSave(const BackgroundSave&) = delete;
  BackgroundSave& operator=(const BackgroundSave&) = delete;
};

// A BackgroundSave exists.
bool savingInBackground();

}  // namespace ddp::health
