#include "runtime/distributed.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "runtime/config.h"
#include "runtime/env/value_parser.h"
#include "runtime/env/variables.h"
#include "runtime/log/logging.h"
#include "runtime/memory/host_allocator.h"
#if HAVE_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace ddp {
namespace {

// A timeout in seconds from `variable`, if set (env::parseSeconds: at most a week, so the
// deadline it becomes cannot overflow).
std::optional<std::chrono::milliseconds> secondsFromEnv(const env::EnvMap& environment,
                                                        const std::string& variable) {
  auto value = env::lookup(environment, variable);
  if (!value) return std::nullopt;
  const auto parsed = env::parseSeconds(*value);
  if (!parsed.value) {
    throw env::EnvError(variable, *value, env::secondsExpectation(), parsed.found,
                        "Fix " + variable + " where it is set (launcher, pod spec or shell).");
  }
  return parsed.value;
}

bool cudaUsable() {
#if HAVE_CUDA
  return torch::cuda::is_available();
#else
  return false;
#endif
}

}  // namespace

comm::Backend resolveBackend(const std::string& name) {
  if (name == "gloo") return comm::Backend::kGloo;
  if (name == "auto") return cudaUsable() ? comm::Backend::kNccl : comm::Backend::kGloo;
  if (name == "nccl") {
    if (!HAVE_NCCL) {
      throw ConfigError(
          "backend 'nccl' requested, but this build has no CUDA/NCCL "
          "(DDPRUN_WITH_CUDA=OFF). ---> HINT: use --backend gloo, or a CUDA build.");
    }
    if (!cudaUsable()) {
      throw ConfigError(
          "backend 'nccl' needs CUDA, but no CUDA device is visible to this "
          "process. ---> HINT: use --backend gloo (CPU) or auto, or check the "
          "pod's nvidia.com/gpu limit and CUDA_VISIBLE_DEVICES.");
    }
    return comm::Backend::kNccl;
  }
  throw ConfigError(fmt::format("unknown backend '{}': expected gloo, nccl or auto", name));
}

Distributed init(const InitOptions& options) {
  const env::EnvMap environment = options.environment.value_or(env::currentEnvironment());
  Distributed d;
  d.env = env::resolveClusterEnv(environment);
  log::setRankTag(std::to_string(d.env.rank));
  // Before the first step allocates: see Note [Keep freed tensor memory].
  const auto allocatorPlan = memory::planHostAllocator(environment);
  const bool keepsFreedBlocks = memory::applyHostAllocator(allocatorPlan);
  log::debug("init", "event=host_allocator keep_freed_blocks={} reason=\"{}\"", keepsFreedBlocks,
             allocatorPlan.reason);
  // "auto" defers to the launcher's --backend (DDPRUN_BACKEND) before choosing by device.
  const auto launcherBackend = env::lookup(environment, env::var::kBackend);
  d.backend = resolveBackend(
      options.backend == "auto" && launcherBackend && !launcherBackend->empty() ? *launcherBackend
                                                                                : options.backend);
  const auto rendezvousTimeout =
      options.rendezvousTimeout.value_or(secondsFromEnv(environment, env::var::kRendezvousTimeout)
                                             .value_or(rendezvous::kDefaultRendezvousTimeout));
  const auto collectiveTimeout =
      options.collectiveTimeout.value_or(secondsFromEnv(environment, env::var::kCollectiveTimeout)
                                             .value_or(comm::kDefaultCollectiveTimeout));
  log::info("init", "{} backend={} rdzv_timeout_s={} collective_timeout_s={}", env::describe(d.env),
            comm::backendName(d.backend), rendezvousTimeout.count() / 1000.0,
            collectiveTimeout.count() / 1000.0);

  if (d.backend == comm::Backend::kNccl) {
#if HAVE_CUDA
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(d.env.localRank));
#endif
    d.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(d.env.localRank));
  }

  auto rendezvous = rendezvous::connect(d.env, {.timeout = rendezvousTimeout});
  d.store = std::move(rendezvous.store);
  d.master = std::move(rendezvous.master);
  d.mpi = std::move(rendezvous.mpi);

  comm::ProcessGroupOptions groupOptions;
  groupOptions.backend = d.backend;
  groupOptions.timeout = collectiveTimeout;
  groupOptions.cudaDevice = d.env.localRank;
  d.group = comm::createProcessGroup(d.store, d.env.rank, d.env.worldSize, groupOptions);
  log::info("init", "event=group_ready backend={} world_size={}", comm::backendName(d.backend),
            d.env.worldSize);
  return d;
}

std::string errorMessage(const std::exception& error) {
  if (const auto* c10Error = dynamic_cast<const c10::Error*>(&error)) {
    return c10Error->what_without_backtrace();
  }
  return error.what();
}

}  // namespace ddp
