// This machine's host name, as errors and heartbeats name a rank's place ("unknown" when
// the kernel does not say).
#pragma once

#include <string>

#include <unistd.h>

namespace ddp::env {

inline std::string thisHostName() {
  char name[256] = {};
  return gethostname(name, sizeof(name) - 1) == 0 ? std::string(name) : std::string("unknown");
}

}  // namespace ddp::env
