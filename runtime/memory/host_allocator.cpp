#include "runtime/memory/host_allocator.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "runtime/env/variables.h"
#include "runtime/error.h"

namespace ddp::memory {

HostAllocatorPlan planHostAllocator(const env::EnvMap& environment) {
  HostAllocatorPlan plan;
  const auto mode = env::lookup(environment, env::var::kHostAllocator).value_or("keep");
  if (mode == "system") {
    plan.reason = "DDPRUN_HOST_ALLOCATOR=system";
    return plan;
  }
  if (mode != "keep") {
    throw ConfigError("DDPRUN_HOST_ALLOCATOR=" + mode +
                      ": expected 'keep' (reuse freed tensor memory, the default) or 'system' "
                      "(glibc's own thresholds)");
  }
#if !defined(__GLIBC__)
  plan.reason = "not glibc";
  return plan;
#endif
  // The user's own malloc settings win.
  for (const char* variable : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}) {
    if (env::lookup(environment, variable)) {
      plan.reason = std::string(variable) + " is set";
      return plan;
    }
  }
  if (env::lookup(environment, "GLIBC_TUNABLES").value_or("").find("glibc.malloc.") !=
      std::string::npos) {
    plan.reason = "GLIBC_TUNABLES sets glibc.malloc.*";
    return plan;
  }
  const auto preload = env::lookup(environment, "LD_PRELOAD").value_or("");
  for (const char* allocator : {"jemalloc", "tcmalloc", "mimalloc"}) {
    if (preload.find(allocator) != std::string::npos) {
      plan.reason = std::string("LD_PRELOAD has ") + allocator;
      return plan;
    }
  }
  plan.keepFreedBlocks = true;
  plan.reason = "DDPRUN_HOST_ALLOCATOR=keep";
  return plan;
}

bool applyHostAllocator(const HostAllocatorPlan& plan) {
  if (!plan.keepFreedBlocks) return false;
#if defined(__GLIBC__)
  // mallopt takes an int: thresholds are capped at 1 GiB (kKeepBlocksUpToBytes).
  return mallopt(M_MMAP_THRESHOLD, static_cast<int>(plan.mmapThresholdBytes)) == 1 &&
         mallopt(M_TRIM_THRESHOLD, static_cast<int>(plan.trimThresholdBytes)) == 1;
#else
  return false;
#endif
}

}  // namespace ddp::memory
