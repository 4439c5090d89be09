#include "runtime/distributed.h"

#include <charconv>

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>

#include "runtime/config.h"
#include "runtime/log/logging.h"
#include "runtime/memory/host_allocator.h"
#if HAVE_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace ddp {
namespace {

// A positive number of seconds from `variable`, if set.
std::optional<std::chrono::milliseconds> secondsFromEnv(const env::EnvMap& environment,
                                                        const std::string& variable) {
  auto value = env::lookup(environment, variable);
  if (!value) return std::nullopt;
  double seconds = 0;
  auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), seconds);
  if (ec != std::errc() || end != value->data() + value->size() || !(seconds > 0)) {
    throw ConfigError(fmt::format("{}={}: expected a positive number of seconds", variable,
                                  *value));
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
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
      throw ConfigError("backend 'nccl' requested, but this build has no CUDA/NCCL "
                        "(DDPRUN_WITH_CUDA=OFF). ---> HINT: use --backend gloo, or a CUDA build.");
    }
    if (!cudaUsable()) {
      throw ConfigError("backend 'nccl' needs CUDA, but no CUDA device is visible to this "
                        "process. ---> HINT: use --backend gloo (CPU) or auto, or check the "
                        "pod's nvidia.com/gpu limit and CUDA_VISIBLE_DEVICES.");
    }
    return comm::Backend::kNccl;
  }
  throw ConfigError(fmt::format("unknown backend '{}': expected gloo, nccl or auto", name));
}

namespace {

// The MPI bootstrap (Note at the top of runtime/rendezvous/mpi_bootstrap.h): rank 0 hosts the
// store on a free port and broadcasts host:port; the others connect to it.
void mpiRendezvous(Distributed& d, rendezvous::TcpStoreOptions& storeOptions, bool portFromEnv) {
  if (d.mpi->rank() != d.env.rank || d.mpi->size() != d.env.worldSize) {
    throw ConfigError(fmt::format(
        "MPI says rank {} of {}, the environment says rank {} of {} (source {}). ---> HINT: "
        "this ddprun's MPI library must be the one mpirun belongs to.",
        d.mpi->rank(), d.mpi->size(), d.env.rank, d.env.worldSize,
        env::sourceName(d.env.source)));
  }
  storeOptions.masterPort = portFromEnv ? d.env.masterPort : 0;
  std::string endpoint;
  if (d.env.rank == 0) {
    d.store = rendezvous::connectTcpStore(storeOptions);
    endpoint = fmt::format("{}:{}", rendezvous::thisHostAddress(),
                           c10::static_intrusive_pointer_cast<c10d::TCPStore>(d.store)->getPort());
  }
  endpoint = d.mpi->broadcastEndpoint(endpoint);
  const auto colon = endpoint.rfind(':');
  d.env.masterAddr = endpoint.substr(0, colon);
  d.env.masterPort = static_cast<std::uint16_t>(std::stoi(endpoint.substr(colon + 1)));
  d.env.origins["masterAddr"] = "mpi-bootstrap";
  d.env.origins["masterPort"] = "mpi-bootstrap";
  log::info("init", "event=mpi_bootstrap master={}", endpoint);
  if (d.env.rank != 0) {
    storeOptions.masterAddr = d.env.masterAddr;
    storeOptions.masterPort = d.env.masterPort;
    d.store = rendezvous::connectTcpStore(storeOptions);
  }
}

}  // namespace

Distributed init(const InitOptions& options) {
  const env::EnvMap environment = options.environment.value_or(env::currentEnvironment());
  Distributed d;
  d.env = env::resolveClusterEnv(environment);
  log::setup(std::to_string(d.env.rank), log::levelFromEnv(log::Level::kInfo));
  // Before the first step allocates: see Note [Keep freed tensor memory].
  const auto allocatorPlan = memory::planHostAllocator(environment);
  const bool keepsFreedBlocks = memory::applyHostAllocator(allocatorPlan);
  log::debug("init", "event=host_allocator keep_freed_blocks={} reason=\"{}\"",
             keepsFreedBlocks, allocatorPlan.reason);
  // "auto" defers to the launcher's --backend (DDPRUN_BACKEND) before choosing by device.
  const auto launcherBackend = env::lookup(environment, "DDPRUN_BACKEND");
  d.backend = resolveBackend(options.backend == "auto" && launcherBackend && !launcherBackend->empty()
                                 ? *launcherBackend
                                 : options.backend);
  const auto rendezvousTimeout =
      options.rendezvousTimeout
          .value_or(secondsFromEnv(environment, "DDPRUN_RDZV_TIMEOUT")
                        .value_or(rendezvous::kDefaultRendezvousTimeout));
  const auto collectiveTimeout =
      options.collectiveTimeout
          .value_or(secondsFromEnv(environment, "DDPRUN_COLLECTIVE_TIMEOUT")
                        .value_or(comm::kDefaultCollectiveTimeout));
  log::info("init", "{} backend={} rdzv_timeout_s={} collective_timeout_s={}",
            env::describe(d.env), comm::backendName(d.backend),
            rendezvousTimeout.count() / 1000.0, collectiveTimeout.count() / 1000.0);

  if (d.backend == comm::Backend::kNccl) {
#if HAVE_CUDA
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(d.env.localRank));
#endif
    d.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(d.env.localRank));
  }

  rendezvous::TcpStoreOptions storeOptions;
  storeOptions.rank = d.env.rank;
  storeOptions.worldSize = d.env.worldSize;
  storeOptions.timeout = rendezvousTimeout;
  const bool portFromEnv = d.env.origins["masterPort"] != "default";
  if (d.env.masterAddr.empty()) {
    // Under mpirun without MASTER_ADDR: rank 0 hosts first, then tells the others.
    d.mpi = std::make_shared<rendezvous::MpiSession>();
    try {
      mpiRendezvous(d, storeOptions, portFromEnv);
    } catch (const std::exception& e) {
      // Ends every rank: a rank leaving through MPI_Finalize would wait for the others,
      // which may be waiting for it (rank 0's store), and mpirun would hang.
      log::error("init", "{} ---> aborting the MPI job (exit {})", e.what(), exitCodeFor(e));
      d.mpi->abort(exitCodeFor(e));
    }
  } else {
    storeOptions.masterAddr = d.env.masterAddr;
    // A lone process with nothing configured takes any free port: two single-process
    // runs on one machine must not collide on 29500.
    storeOptions.masterPort =
        d.env.worldSize == 1 && !portFromEnv ? std::uint16_t{0} : d.env.masterPort;
    d.store = rendezvous::connectTcpStore(storeOptions);
  }

  comm::ProcessGroupOptions groupOptions;
  groupOptions.backend = d.backend;
  groupOptions.timeout = collectiveTimeout;
  groupOptions.cudaDevice = d.env.localRank;
  d.group = comm::createProcessGroup(d.store, d.env.rank, d.env.worldSize, groupOptions);
  log::info("init", "event=group_ready backend={} world_size={}", comm::backendName(d.backend),
            d.env.worldSize);
  return d;
}

int exitCodeFor(const std::exception& error) {
  if (dynamic_cast<const env::EnvError*>(&error) || dynamic_cast<const ConfigError*>(&error)) {
    return kExitUsage;
  }
  return kExitTransient;
}

}  // namespace ddp
