// runtime/memory/host_allocator: which environments keep freed blocks, and that a kept
// block is reused without page faults (Note [Keep freed tensor memory]).
#include "runtime/memory/host_allocator.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "runtime/exit_codes.h"

namespace ddp::memory {
namespace {

struct PlanCase {
  const char* name;
  env::EnvMap environment;
  bool keepFreedBlocks;
  const char* reason;
};

TEST(HostAllocatorPlanTest, EachEnvironmentGetsItsPlan) {
  const PlanCase cases[] = {
      {"default", {}, true, "DDPRUN_HOST_ALLOCATOR=keep"},
      {"keep", {{"DDPRUN_HOST_ALLOCATOR", "keep"}}, true, "DDPRUN_HOST_ALLOCATOR=keep"},
      {"system", {{"DDPRUN_HOST_ALLOCATOR", "system"}}, false, "DDPRUN_HOST_ALLOCATOR=system"},
      {"user mmap threshold",
       {{"MALLOC_MMAP_THRESHOLD_", "65536"}},
       false,
       "MALLOC_MMAP_THRESHOLD_ is set"},
      {"user trim threshold",
       {{"MALLOC_TRIM_THRESHOLD_", "0"}},
       false,
       "MALLOC_TRIM_THRESHOLD_ is set"},
      {"tunables for malloc",
       {{"GLIBC_TUNABLES", "glibc.malloc.arena_max=2"}},
       false,
       "GLIBC_TUNABLES sets glibc.malloc.*"},
      {"tunables for something else",
       {{"GLIBC_TUNABLES", "glibc.pthread.rseq=0"}},
       true,
       "DDPRUN_HOST_ALLOCATOR=keep"},
      {"jemalloc preloaded",
       {{"LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}},
       false,
       "LD_PRELOAD has jemalloc"},
      {"tcmalloc preloaded",
       {{"LD_PRELOAD", "libtcmalloc_minimal.so.4"}},
       false,
       "LD_PRELOAD has tcmalloc"},
      {"other preload", {{"LD_PRELOAD", "libfaketime.so"}}, true, "DDPRUN_HOST_ALLOCATOR=keep"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto plan = planHostAllocator(c.environment);
    EXPECT_EQ(plan.keepFreedBlocks, c.keepFreedBlocks);
    EXPECT_EQ(plan.reason, c.reason);
    EXPECT_EQ(plan.mmapThresholdBytes, kKeepBlocksUpToBytes);
    EXPECT_EQ(plan.trimThresholdBytes, kKeepFreeHeapTopBytes);
  }
}

TEST(HostAllocatorPlanTest, UnknownModeIsAConfigErrorNamingTheChoices) {
  try {
    planHostAllocator({{"DDPRUN_HOST_ALLOCATOR", "jemalloc"}});
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(),
                 "DDPRUN_HOST_ALLOCATOR=jemalloc: expected 'keep' (reuse freed tensor memory, "
                 "the default) or 'system' (glibc's own thresholds)");
  }
}

TEST(HostAllocatorPlanTest, NothingToApplyLeavesMallocAlone) {
  EXPECT_FALSE(applyHostAllocator(planHostAllocator({{"DDPRUN_HOST_ALLOCATOR", "system"}})));
}

long minorFaults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// In a child (mallopt is process-wide): applies `environment`'s plan, then allocates,
// touches and frees a 64 MiB block as c10's CPU allocator does (posix_memalign, 64-byte
// alignment), round after round like a training step, and exits with the minor page
// faults of the last kMeasuredRounds (capped at 250). A fresh block faults 16384 pages
// (32 with transparent huge pages); a reused one none. glibc needs a few rounds before
// the heap reuses a block: memalign's small leftovers sit in the tcache until it fills.
constexpr int kRounds = 16;
constexpr int kMeasuredRounds = 4;

int steadyStateFaultsInChild(const env::EnvMap& environment) {
  const pid_t child = fork();
  if (child == 0) {
    const bool applied = applyHostAllocator(planHostAllocator(environment));
    if (environment.empty() && !applied) _exit(255);
    constexpr std::size_t kBytes = std::size_t{64} << 20;
    long faults = 0;
    for (int round = 0; round < kRounds; ++round) {
      void* block = nullptr;
      if (posix_memalign(&block, 64, kBytes) != 0) _exit(254);
      const long before = minorFaults();
      std::memset(block, round + 1, kBytes);
      asm volatile("" : : "r"(block) : "memory");  // the stores are not dead
      if (round >= kRounds - kMeasuredRounds) faults += minorFaults() - before;
      std::free(block);
    }
    _exit(static_cast<int>(std::min(faults, 250L)));
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(HostAllocatorEffectTest, KeptBlockIsReusedWithoutPageFaults) {
  const int kept = steadyStateFaultsInChild({});
  ASSERT_NE(kept, 255) << "glibc refused the thresholds";
  EXPECT_LE(kept, 8) << "the last " << kMeasuredRounds << " rounds faulted " << kept << " pages";
}

TEST(HostAllocatorEffectTest, SystemModeFaultsEveryRound) {
  // The control: without the thresholds glibc unmaps the block at free, and every round
  // faults in all of its pages again.
  const int faults = steadyStateFaultsInChild({{"DDPRUN_HOST_ALLOCATOR", "system"}});
  EXPECT_GE(faults, 32 * kMeasuredRounds) << "expected 32 (huge pages) or more per round";
}

}  // namespace
}  // namespace ddp::memory
