#include "launcher/launch_plan.h"

#include <dlfcn.h>
#include <sched.h>

#include <algorithm>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "runtime/env/value_parser.h"
#include "runtime/env/variables.h"

namespace ddp::launcher {
namespace {

using env::EnvError;
namespace var = env::var;

constexpr int kMaxWorkersPerNode = 1024;

// nprocPerNode as written (flag or PET_NPROC_PER_NODE) -> a worker count on this machine.
int resolveNproc(const std::string& text, const std::string& origin, const DeviceCounts& devices) {
  auto fail = [&](const std::string& found, const std::string& hint) -> int {
    const std::string expected = "a number of workers in [1, 1024], auto, cpu or gpu";
    if (origin.rfind("--", 0) == 0) {
      throw LaunchError(env::describeBadValue(origin, text, expected, found, hint));
    }
    throw EnvError(origin, text, expected, found, hint);
  };
  if (text == "auto") return std::max(1, devices.gpus);
  if (text == "cpu") return std::max(1, devices.cpus);
  if (text == "gpu") {
    if (devices.gpus == 0) {
      return fail(devices.gpuSource.empty()
                      ? "no usable GPU"
                      : "no usable GPU (counted by " + devices.gpuSource + ")",
                  "Use auto or a number, or run where GPUs are visible.");
    }
    return devices.gpus;
  }
  if (text == "xpu") return fail("xpu", "ddprun knows CUDA GPUs and CPUs only.");
  const auto count = env::parseInteger(text, 1, kMaxWorkersPerNode);
  if (!count.value) return fail(count.found, "");
  return static_cast<int>(*count.value);
}

// Under mpirun (one ddprun per node) every worker checks its GROUP_RANK and
// GROUP_WORLD_SIZE against the MPI rank and size it inherits (Note [Environment
// precedence]): a flag that says otherwise would start workers that all refuse to run.
void checkFlagAgreesWithMpi(const env::NodeEnv& node, const std::string& flag,
                            const std::optional<int>& given, int mpiValue, const std::string& field,
                            const std::string& what) {
  if (!given || *given == mpiValue) return;
  const std::string variable = node.origins.at(field);
  throw LaunchError(env::describeBadValue(
      "--" + flag, std::to_string(*given),
      "the " + what + " mpirun gives this launcher, " + variable + "=" + std::to_string(mpiValue),
      std::to_string(*given),
      "Drop --" + flag +
          " (under mpirun the MPI rank is the node rank and its size the node "
          "count), or start ddprun outside mpirun."));
}

// The device a worker sees as its only one under --virtual-local-rank (torchrun's rule).
std::string virtualDevice(const WorkerEnvOptions& options, int localRank) {
  if (!options.visibleDevices) return std::to_string(localRank);
  return env::splitList(*options.visibleDevices, ',').at(static_cast<std::size_t>(localRank));
}

}  // namespace

CudaDriverCount countGpusWithCudaDriver() {
  CudaDriverCount result;
  // Never closed: the driver does not support being unloaded.
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (driver == nullptr) return result;
  using Init = int (*)(unsigned int);
  using Count = int (*)(int*);
  using ErrorName = int (*)(int, const char**);
  const auto init = reinterpret_cast<Init>(dlsym(driver, "cuInit"));
  const auto count = reinterpret_cast<Count>(dlsym(driver, "cuDeviceGetCount"));
  const auto errorName = reinterpret_cast<ErrorName>(dlsym(driver, "cuGetErrorName"));
  if (init == nullptr || count == nullptr) return result;
  result.loaded = true;
  result.status = init(0);
  if (result.status == 0) result.status = count(&result.count);
  if (result.status != 0) {
    const char* name = nullptr;
    result.error = errorName != nullptr && errorName(result.status, &name) == 0 && name != nullptr
                       ? name
                       : "CUDA driver error " + std::to_string(result.status);
    result.count = 0;
  }
  return result;
}

DeviceCounts detectDevices(const env::EnvMap& env, const GpuProbe& probe) {
  DeviceCounts counts;
  cpu_set_t set;
  CPU_ZERO(&set);
  counts.cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;

  auto entries = [](const std::string& list) {
    return list.empty() || list == "-1"
               ? 0
               : static_cast<int>(std::count(list.begin(), list.end(), ',')) + 1;
  };
  const auto nvidiaVisible = env::lookup(env, "NVIDIA_VISIBLE_DEVICES");
  const bool nvidiaListsDevices = nvidiaVisible && !nvidiaVisible->empty() &&
                                  *nvidiaVisible != "void" && *nvidiaVisible != "none";
  std::string driverProblem;
  if (probe.askDriver) {
    const auto driver = probe.driverCount();
    if (driver.loaded && driver.status == 0) {
      counts.gpus = driver.count;
      counts.gpuSource = "the CUDA driver";
      return counts;
    }
    if (driver.loaded) driverProblem = "the CUDA driver reports " + driver.error;
  }
  if (auto visible = env::lookup(env, var::kCudaVisibleDevices)) {
    counts.gpus = entries(*visible);
    counts.gpuSource = var::kCudaVisibleDevices;
  } else if (nvidiaListsDevices && *nvidiaVisible != "all") {
    counts.gpus = entries(*nvidiaVisible);
    counts.gpuSource = "NVIDIA_VISIBLE_DEVICES";
  } else {
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator(probe.devDir, error)) {
      const auto name = entry.path().filename().string();
      if (name.size() > 6 && name.rfind("nvidia", 0) == 0 &&
          name.find_first_not_of("0123456789", 6) == std::string::npos) {
        ++counts.gpus;
      }
    }
    counts.gpuSource = probe.devDir + "/nvidiaN";
  }
  const bool looksLikeGpuPod =
      nvidiaListsDevices || std::filesystem::exists(probe.devDir + "/nvidiactl");
  if (counts.gpus == 0 && looksLikeGpuPod) {
    counts.gpuWarning =
        "this looks like a GPU pod (" +
        (nvidiaListsDevices ? "NVIDIA_VISIBLE_DEVICES=" + *nvidiaVisible
                            : probe.devDir + "/nvidiactl exists") +
        "), but no GPU can be used: " +
        (driverProblem.empty() ? "none counted by " + counts.gpuSource : driverProblem) +
        ". Workers will run on CPU; check the node's driver and the pod's "
        "nvidia.com/gpu limit.";
  } else if (counts.gpus > 0 && !driverProblem.empty()) {
    counts.gpuWarning = std::to_string(counts.gpus) + " GPU(s) counted by " + counts.gpuSource +
                        ", but " + driverProblem +
                        ": workers will not be able to use CUDA (check the node's driver).";
  }
  return counts;
}

LaunchPlan resolveLaunchPlan(const LaunchFlags& flags, const env::NodeEnv& node,
                             const DeviceCounts& devices) {
  LaunchPlan plan;
  plan.source = std::string(env::sourceName(node.source));
  plan.nnodes = node.nnodes;
  plan.nodeRank = node.nodeRank;
  plan.origins["nnodes"] = node.origins.at("nnodes");
  plan.origins["nodeRank"] = node.origins.at("nodeRank");
  if (plan.source == "default" &&
      (flags.nnodes || flags.nodeRank || flags.masterAddr || flags.masterPort)) {
    plan.source = "flags";
  }
  plan.standalone = flags.standalone;

  if (node.source == env::EnvSource::kOpenMpi || node.source == env::EnvSource::kPmi) {
    checkFlagAgreesWithMpi(node, "nnodes", flags.nnodes, node.nnodes, "nnodes", "node count");
    checkFlagAgreesWithMpi(node, "node-rank", flags.nodeRank, node.nodeRank, "nodeRank",
                           "node rank");
  }
  if (flags.nnodes) {
    plan.nnodes = *flags.nnodes;
    plan.origins["nnodes"] = "--nnodes";
  }
  if (flags.nodeRank) {
    plan.nodeRank = *flags.nodeRank;
    plan.origins["nodeRank"] = "--node-rank";
  }
  if (plan.standalone) {
    if (plan.nnodes != 1) {
      throw LaunchError("--standalone runs one node, but nnodes=" + std::to_string(plan.nnodes) +
                        " (from " + plan.origins["nnodes"] +
                        "). Drop --standalone, or "
                        "--nnodes.");
    }
    plan.nodeRank = 0;
  }
  plan.maxNodes = flags.maxNodes  ? *flags.maxNodes
                  : flags.nnodes  ? plan.nnodes
                  : node.maxNodes ? *node.maxNodes
                                  : plan.nnodes;
  plan.rendezvousBackend = flags.rendezvousBackend;
  plan.runId = flags.runId;
  const bool c10d = plan.rendezvousBackend == "c10d";
  if (plan.maxNodes != plan.nnodes && !c10d) {
    throw LaunchError("nnodes " + std::to_string(plan.nnodes) + ":" +
                      std::to_string(plan.maxNodes) + " (from " + plan.origins["nnodes"] +
                      ") is an elastic range, and the static rendezvous has fixed node ranks. "
                      "Add --rdzv-backend c10d --rdzv-endpoint HOST:PORT (an elastic "
                      "PyTorchJob sets PET_RDZV_BACKEND and PET_RDZV_ENDPOINT), or give N.");
  }
  if (c10d) {
    if (plan.standalone) {
      throw LaunchError(
          "--standalone starts its own single-node rendezvous; drop it, or drop "
          "--rdzv-backend c10d.");
    }
    // Each round of the rendezvous decides these (launcher/node_rendezvous.h).
    plan.nodeRank = 0;
    plan.origins["nodeRank"] = "rendezvous";
  }
  if (plan.nodeRank >= plan.nnodes) {
    throw LaunchError("node rank " + std::to_string(plan.nodeRank) + " (from " +
                      plan.origins["nodeRank"] + ") must be below the node count " +
                      std::to_string(plan.nnodes) + " (from " + plan.origins["nnodes"] + ").");
  }

  if (flags.nprocPerNode) {
    plan.nprocPerNode = resolveNproc(*flags.nprocPerNode, "--nproc-per-node", devices);
    plan.origins["nprocPerNode"] = "--nproc-per-node";
  } else if (node.nprocPerNode) {
    plan.nprocPerNode = resolveNproc(*node.nprocPerNode, var::kPetNprocPerNode, devices);
    plan.origins["nprocPerNode"] = var::kPetNprocPerNode;
  } else {
    plan.origins["nprocPerNode"] = "default";
  }
  if (static_cast<long long>(plan.nnodes) * plan.nprocPerNode > std::numeric_limits<int>::max()) {
    throw LaunchError("nnodes x nproc-per-node overflows: " + std::to_string(plan.nnodes) + " x " +
                      std::to_string(plan.nprocPerNode));
  }

  if (c10d) {
    plan.masterAddr = "";
    plan.masterPort = 0;
    plan.origins["masterAddr"] = plan.origins["masterPort"] = "rendezvous";
  } else if (plan.standalone) {
    plan.masterAddr = "127.0.0.1";
    plan.masterPort = flags.masterPort.value_or(0);  // 0: the launcher picks a free one
    plan.origins["masterAddr"] = plan.origins["masterPort"] = "--standalone";
  } else {
    if (flags.masterAddr) {
      plan.masterAddr = *flags.masterAddr;
      plan.origins["masterAddr"] = "--master-addr";
    } else if (node.masterAddr) {
      plan.masterAddr = *node.masterAddr;
      plan.origins["masterAddr"] = node.origins.at("masterAddr");
    } else if (plan.nnodes > 1) {
      const bool mpi =
          node.source == env::EnvSource::kOpenMpi || node.source == env::EnvSource::kPmi;
      throw EnvError(var::kMasterAddr, std::nullopt,
                     "the address of the node with rank 0 when there are " +
                         std::to_string(plan.nnodes) + " nodes",
                     "no --master-addr, MASTER_ADDR or PET_MASTER_ADDR",
                     mpi ? "Under mpirun, forward it (mpirun -x MASTER_ADDR=<first host>), or "
                           "start the training program itself under mpirun: it finds rank 0 "
                           "through MPI."
                         : "Pass --master-addr, or set MASTER_ADDR to node 0's host name.");
    } else {
      plan.origins["masterAddr"] = "default";
    }
    if (flags.masterPort) {
      plan.masterPort = *flags.masterPort;
      plan.origins["masterPort"] = "--master-port";
    } else if (node.masterPort) {
      plan.masterPort = *node.masterPort;
      plan.origins["masterPort"] = node.origins.at("masterPort");
    } else {
      plan.origins["masterPort"] = "default";
    }
  }

  plan.maxRestarts = flags.maxRestarts.value_or(0);
  plan.origins["maxRestarts"] = flags.maxRestarts ? flags.maxRestartsOrigin : "default";
  return plan;
}

LaunchPlan resolveLaunchPlan(const LaunchFlags& flags, const env::EnvMap& env,
                             const DeviceCounts& devices) {
  const env::NodeFlags given{.nnodes = flags.nnodes.has_value(),
                             .nodeRank = flags.nodeRank.has_value(),
                             .nprocPerNode = flags.nprocPerNode.has_value(),
                             .masterAddr = flags.masterAddr.has_value() || flags.standalone,
                             .masterPort = flags.masterPort.has_value() || flags.standalone};
  return resolveLaunchPlan(flags, env::resolveNodeEnv(env, given), devices);
}

void checkVirtualLocalRanks(const LaunchPlan& plan, const WorkerEnvOptions& options) {
  if (!options.virtualLocalRank || !options.visibleDevices) return;
  const auto devices = env::splitList(*options.visibleDevices, ',');
  if (static_cast<int>(devices.size()) >= plan.nprocPerNode) return;
  throw LaunchError(env::describeBadValue(
      var::kCudaVisibleDevices, *options.visibleDevices,
      "a device for each of the " + std::to_string(plan.nprocPerNode) +
          " workers (--virtual-local-rank gives each one its own)",
      std::to_string(devices.size()), "Lower --nproc-per-node, or make more devices visible."));
}

std::map<std::string, std::string> workerEnvironment(const LaunchPlan& plan, int localRank,
                                                     const WorkerEnvOptions& options) {
  const std::string rank = std::to_string(plan.globalRank(localRank));
  const std::string worldSize = std::to_string(plan.worldSize());
  std::map<std::string, std::string> env{
      {var::kRank, rank},
      {var::kLocalRank, std::to_string(localRank)},
      {var::kWorldSize, worldSize},
      {var::kLocalWorldSize, std::to_string(plan.nprocPerNode)},
      {var::kGroupRank, std::to_string(plan.nodeRank)},
      {var::kGroupWorldSize, std::to_string(plan.nnodes)},
      {var::kRoleName, options.role},
      {var::kRoleRank, rank},
      {var::kRoleWorldSize, worldSize},
      {var::kMasterAddr, plan.masterAddr},
      {var::kMasterPort, std::to_string(plan.masterPort)},
      {var::kTorchelasticRestartCount, std::to_string(options.restartCount)},
      {var::kTorchelasticMaxRestarts, std::to_string(plan.maxRestarts)},
      {var::kTorchelasticRunId, plan.runId},
      // The runtime reads either; a stale one inherited from the pod must not disagree.
      {var::kRestartCount, std::to_string(options.restartCount)},
  };
  if (options.virtualLocalRank) {
    env[var::kLocalRank] = "0";
    env[var::kCudaVisibleDevices] = virtualDevice(options, localRank);
  }
  if (options.ompNumThreads > 0) env[var::kOmpNumThreads] = std::to_string(options.ompNumThreads);
  if (!options.backend.empty()) env[var::kBackend] = options.backend;
  if (options.rendezvousTimeoutSeconds > 0) {
    env[var::kRendezvousTimeout] = std::to_string(options.rendezvousTimeoutSeconds);
  }
  if (!options.attemptLogDir.empty()) {
    env[var::kTorchelasticErrorFile] =
        (std::filesystem::path(options.attemptLogDir) / std::to_string(localRank) / "error.json")
            .string();
    // Note [Watchdog] in runtime/health/watchdog.h: the launcher's view of its liveness.
    env[var::kHeartbeatFile] = (std::filesystem::path(options.attemptLogDir) /
                                std::to_string(localRank) / "heartbeat.json")
                                   .string();
    if (options.metricsFiles) {
      env[var::kMetricsFile] = workerMetricsFile(options.attemptLogDir, localRank);
    }
  }
  if (options.progressBar) env[var::kProgress] = *options.progressBar ? "1" : "0";
  if (options.hangTimeoutSeconds > 0) {
    env[var::kHangTimeout] = std::to_string(options.hangTimeoutSeconds);
  }
  if (options.pythonUnbuffered) env[var::kPythonUnbuffered] = "1";
  return env;
}

std::string workerMetricsFile(const std::string& attemptLogDir, int localRank) {
  return (std::filesystem::path(attemptLogDir) / std::to_string(localRank) / "metrics.json")
      .string();
}

std::string describePlanJson(const LaunchPlan& plan, const WorkerProgram& program,
                             const WorkerEnvOptions& options) {
  nlohmann::ordered_json out;
  out["source"] = plan.source;
  out["nnodes"] = plan.nnodes;
  out["nodeRank"] = plan.nodeRank;
  out["nprocPerNode"] = plan.nprocPerNode;
  out["worldSize"] = plan.worldSize();
  out["masterAddr"] = plan.masterAddr;
  out["masterPort"] = plan.masterPort;
  out["maxRestarts"] = plan.maxRestarts;
  out["standalone"] = plan.standalone;
  const bool c10d = plan.rendezvousBackend == "c10d";
  out["rendezvous"] = {{"backend", plan.rendezvousBackend}};
  if (c10d) {
    out["rendezvous"]["endpoint"] = plan.rendezvousEndpoint;
    out["rendezvous"]["runId"] = plan.runId;
    out["rendezvous"]["minNodes"] = plan.nnodes;
    out["rendezvous"]["maxNodes"] = plan.maxNodes;
  }
  out["origins"] = plan.origins;
  out["program"] = program.argv;
  out["programKind"] = programKindName(program.kind);
  out["programReason"] = program.reason;
  out["workers"] = nlohmann::ordered_json::array();
  // With c10d, what each round assigns is shown as such: the plan cannot know it.
  constexpr const char* kPerRound = "<assigned by each rendezvous round>";
  for (int local = 0; local < plan.nprocPerNode; ++local) {
    auto env = workerEnvironment(plan, local, options);
    if (c10d) {
      for (const char* name :
           {var::kRank, var::kWorldSize, var::kGroupRank, var::kGroupWorldSize, var::kRoleRank,
            var::kRoleWorldSize, var::kMasterAddr, var::kMasterPort}) {
        env[name] = kPerRound;
      }
    }
    out["workers"].push_back({{"rank", c10d ? nlohmann::ordered_json(kPerRound)
                                            : nlohmann::ordered_json(plan.globalRank(local))},
                              {"localRank", local},
                              {"env", env}});
  }
  return out.dump(2);
}

}  // namespace ddp::launcher
