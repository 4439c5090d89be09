// How the host (CPU) allocator treats the large blocks a training step frees.
//
// Note [Keep freed tensor memory]
// glibc's malloc serves a block above its mmap threshold (dynamic, at most 32 MiB) with
// a fresh mmap and unmaps it on free. A training step frees and re-allocates the same
// large tensors every iteration (gradients with zero_grad(set_to_none), activations,
// the big matmul outputs), so each step pays the kernel for zeroed pages again: for a
// 25M-parameter model, 100 MB of gradients is ~25,000 page faults per step, a third of
// its compute time here (benchmarks/ddp). PyTorch's CUDA caching allocator keeps freed
// device blocks for the same reason; on the CPU, PyTorch leaves it to the user (Intel's
// tuning guide: preload jemalloc or tcmalloc).
// The runtime therefore raises glibc's mmap and trim thresholds at init (mallopt), so
// freed blocks up to kKeepBlocksUpToBytes stay in the heap and the next step reuses
// them without a fault (after a few steps: glibc first parks memalign's small leftovers
// in its tcache). The price: the process keeps its peak heap, as a caching allocator
// does; measured on the 25M-parameter benchmark, 1.03 GB instead of 0.86 GB per rank,
// flat from step 40 to 150, for a 1.3x faster step. DDPRUN_HOST_ALLOCATOR=system leaves glibc as it
// is; the runtime also leaves it when the user tuned malloc themselves (MALLOC_*_ or GLIBC_TUNABLES
// glibc.malloc.*) or preloads another allocator.
#pragma once

#include <cstddef>
#include <string>

#include "runtime/env/cluster_env.h"

namespace ddp::memory {

// Blocks up to this size are served from (and returned to) the heap, not mmap'd.
constexpr std::size_t kKeepBlocksUpToBytes = std::size_t{1} << 30;
// Free memory at the top of the heap kept instead of returned to the kernel.
constexpr std::size_t kKeepFreeHeapTopBytes = std::size_t{1} << 30;

struct HostAllocatorPlan {
  bool keepFreedBlocks = false;
  std::string reason;  // why (or why not), for the log line
  std::size_t mmapThresholdBytes = kKeepBlocksUpToBytes;
  std::size_t trimThresholdBytes = kKeepFreeHeapTopBytes;
};

// What to do in `environment` (DDPRUN_HOST_ALLOCATOR = keep (default) | system).
// Throws ConfigError for any other value.
HostAllocatorPlan planHostAllocator(const env::EnvMap& environment);

// Applies a plan to this process's malloc. Returns false when there was nothing to do
// or glibc refused (then malloc is unchanged).
bool applyHostAllocator(const HostAllocatorPlan& plan);

}  // namespace ddp::memory
