#include "launcher/launch_plan.h"

#include <sched.h>

#include <algorithm>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

namespace ddp::launcher {
namespace {

using env::EnvError;
using env::EnvMap;
using env::lookup;

constexpr int kIntMax = std::numeric_limits<int>::max();
constexpr int kPortMax = 65535;

// A node-level count or rank read from the environment, with the variable it came from.
struct Found {
  int value;
  std::string origin;
};

std::optional<Found> readInt(const EnvMap& env, const std::string& name, int min, int max) {
  auto value = env::parseIntVar(env, name, min, max);
  if (!value) return std::nullopt;
  return Found{*value, name};
}

bool isSymbolicNproc(const std::string& text) {
  return text == "auto" || text == "cpu" || text == "gpu" || text == "xpu";
}

// nprocPerNode as written (flag or PET_NPROC_PER_NODE) -> a worker count on this machine.
int resolveNproc(const std::string& text, const std::string& origin, const DeviceCounts& devices) {
  auto fail = [&](const std::string& found, const std::string& hint) -> int {
    if (origin.rfind("--", 0) == 0) {
      throw LaunchError(origin + "=" + text + ": expected a number of workers in [1, 1024], "
                        "auto, cpu or gpu; found " + found + ". " + hint);
    }
    throw EnvError(origin, text, "a number of workers in [1, 1024], auto, cpu or gpu", found,
                   hint);
  };
  if (text == "auto") return std::max(1, devices.gpus);
  if (text == "cpu") return std::max(1, devices.cpus);
  if (text == "gpu") {
    if (devices.gpus == 0) {
      return fail("no visible GPU (CUDA_VISIBLE_DEVICES, /dev/nvidia*)",
                  "Use auto or a number, or run where GPUs are visible.");
    }
    return devices.gpus;
  }
  if (text == "xpu") return fail("xpu", "ddprun knows CUDA GPUs and CPUs only.");
  const bool digits = !text.empty() && text.size() <= 4 &&
                      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  const int count = digits ? std::stoi(text) : 0;
  if (count < 1 || count > 1024) return fail("'" + text + "'", "");
  return count;
}

// Sets nnodes and nodeRank from the first environment source present; returns its name.
std::string resolveNodes(const EnvMap& env, LaunchPlan& plan) {
  std::optional<Found> petNnodes;
  if (auto nodes = env::parsePetNnodes(env)) petNnodes = Found{*nodes, "PET_NNODES"};
  const auto petNodeRank = readInt(env, "PET_NODE_RANK", 0, kIntMax);
  const bool hasPet = petNnodes || petNodeRank || lookup(env, "PET_NPROC_PER_NODE") ||
                      lookup(env, "PET_MASTER_ADDR");

  auto mpiRank = readInt(env, "OMPI_COMM_WORLD_RANK", 0, kIntMax);
  auto mpiSize = readInt(env, "OMPI_COMM_WORLD_SIZE", 1, kIntMax);
  std::string mpiSource = "openmpi";
  if (!mpiRank && !mpiSize) {
    mpiRank = readInt(env, "PMI_RANK", 0, kIntMax);
    if (!mpiRank) mpiRank = readInt(env, "PMI_ID", 0, kIntMax);
    mpiSize = readInt(env, "PMI_SIZE", 1, kIntMax);
    mpiSource = "pmi";
  }
  if (mpiRank || mpiSize) {
    if (!mpiRank || !mpiSize) {
      const std::string missing = mpiSource == "openmpi"
                                      ? (mpiRank ? "OMPI_COMM_WORLD_SIZE" : "OMPI_COMM_WORLD_RANK")
                                      : (mpiRank ? "PMI_SIZE" : "PMI_RANK");
      throw EnvError(missing, std::nullopt, "set together with its partner",
                     "only " + (mpiRank ? mpiRank->origin : mpiSize->origin) + " is set",
                     "Start ddprun with mpirun, or unset the MPI variables.");
    }
    if (mpiRank->value >= mpiSize->value) {
      throw EnvError(mpiRank->origin, std::to_string(mpiRank->value),
                     "a rank below " + mpiSize->origin + "=" + std::to_string(mpiSize->value),
                     std::to_string(mpiRank->value), "The MPI environment is inconsistent.");
    }
    plan.nnodes = mpiSize->value;
    plan.nodeRank = mpiRank->value;
    plan.origins["nnodes"] = mpiSize->origin;
    plan.origins["nodeRank"] = mpiRank->origin;
    return mpiSource;
  }

  const auto rank = readInt(env, "RANK", 0, kIntMax);
  const auto worldSize = readInt(env, "WORLD_SIZE", 1, kIntMax);
  if (rank || worldSize) {
    if (!rank || !worldSize) {
      throw EnvError(rank ? "WORLD_SIZE" : "RANK", std::nullopt,
                     "RANK and WORLD_SIZE set together", "only " +
                         (rank ? rank->origin : worldSize->origin) + " is set",
                     "Set both (the PyTorchJob operator does), or neither.");
    }
    if (petNodeRank && petNodeRank->value != rank->value) {
      throw EnvError("PET_NODE_RANK", std::to_string(petNodeRank->value),
                     "the pod rank RANK=" + std::to_string(rank->value),
                     std::to_string(petNodeRank->value),
                     "The two come from the same operator and must be equal; fix the pod spec.");
    }
    if (petNnodes) {
      const auto petNproc = lookup(env, "PET_NPROC_PER_NODE");
      const int perNode = petNproc && !isSymbolicNproc(*petNproc)
                              ? env::parseInt("PET_NPROC_PER_NODE", *petNproc, 1, 1024)
                              : 1;
      if (static_cast<long long>(petNnodes->value) * perNode != worldSize->value) {
        throw EnvError("WORLD_SIZE", std::to_string(worldSize->value),
                       "PET_NNODES x nprocPerNode = " + std::to_string(petNnodes->value) +
                           " x " + std::to_string(perNode),
                       std::to_string(worldSize->value),
                       "The operator derives both from the job spec; fix the pod spec.");
      }
      plan.nnodes = petNnodes->value;
      plan.origins["nnodes"] = "PET_NNODES";
    } else {
      plan.nnodes = worldSize->value;  // operators before v1.7: WORLD_SIZE counts pods
      plan.origins["nnodes"] = "WORLD_SIZE";
    }
    plan.nodeRank = rank->value;
    plan.origins["nodeRank"] = petNodeRank ? "PET_NODE_RANK" : "RANK";
    return "pytorchjob";
  }

  if (hasPet) {
    plan.nnodes = petNnodes ? petNnodes->value : 1;
    plan.nodeRank = petNodeRank ? petNodeRank->value : 0;
    plan.origins["nnodes"] = petNnodes ? "PET_NNODES" : "default";
    plan.origins["nodeRank"] = petNodeRank ? "PET_NODE_RANK" : "default";
    return "trainer-v2";
  }
  plan.origins["nnodes"] = "default";
  plan.origins["nodeRank"] = "default";
  return "default";
}

// MASTER_ADDR/MASTER_PORT win over PET_MASTER_ADDR/PET_MASTER_PORT; both set and different
// is a contradiction.
std::optional<Found> readMasterPort(const EnvMap& env) {
  auto port = readInt(env, "MASTER_PORT", 1, kPortMax);
  auto petPort = readInt(env, "PET_MASTER_PORT", 1, kPortMax);
  if (port && petPort && port->value != petPort->value) {
    throw EnvError("PET_MASTER_PORT", std::to_string(petPort->value),
                   "the same port as MASTER_PORT=" + std::to_string(port->value),
                   std::to_string(petPort->value), "Unset one of them or make them equal.");
  }
  return port ? port : petPort;
}

std::optional<std::pair<std::string, std::string>> readMasterAddr(const EnvMap& env) {
  std::optional<std::pair<std::string, std::string>> chosen;
  for (const char* name : {"MASTER_ADDR", "PET_MASTER_ADDR"}) {
    auto value = lookup(env, name);
    if (!value) continue;
    if (value->empty()) {
      throw EnvError(name, *value, "a host name or IP address", "an empty value",
                     "Unset it or give the master's address.");
    }
    if (!chosen) {
      chosen.emplace(*value, name);
    } else if (chosen->first != *value) {
      throw EnvError(name, *value, "the same host as MASTER_ADDR=" + chosen->first, *value,
                     "Unset one of them or make them equal.");
    }
  }
  return chosen;
}

}  // namespace

DeviceCounts detectDevices(const env::EnvMap& env) {
  DeviceCounts counts;
  if (auto visible = lookup(env, "CUDA_VISIBLE_DEVICES")) {
    counts.gpus = visible->empty() || *visible == "-1"
                      ? 0
                      : static_cast<int>(std::count(visible->begin(), visible->end(), ',')) + 1;
  } else {
    for (int i = 0; i < 64 && std::filesystem::exists("/dev/nvidia" + std::to_string(i)); ++i) {
      ++counts.gpus;
    }
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  counts.cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  return counts;
}

LaunchPlan resolveLaunchPlan(const LaunchFlags& flags, const env::EnvMap& env,
                             const DeviceCounts& devices) {
  if (auto localRank = lookup(env, "LOCAL_RANK")) {
    throw EnvError("LOCAL_RANK", *localRank, "a node's environment (no LOCAL_RANK)",
                   "the environment of a worker that a launcher already started",
                   "ddprun is running inside another launcher's worker; start the program "
                   "directly, or unset LOCAL_RANK.");
  }
  LaunchPlan plan;
  plan.source = resolveNodes(env, plan);
  if (plan.source == "default" &&
      (flags.nnodes || flags.nodeRank || flags.masterAddr || flags.masterPort)) {
    plan.source = "flags";
  }

  // Standalone: flag, or PET_STANDALONE where the operator writes "" for true.
  if (auto petStandalone = lookup(env, "PET_STANDALONE")) {
    if (*petStandalone != "" && *petStandalone != "0" && *petStandalone != "1") {
      throw EnvError("PET_STANDALONE", *petStandalone, "empty, 0 or 1", *petStandalone,
                     "Fix elasticPolicy.standalone in the job spec.");
    }
    plan.standalone = *petStandalone != "0";
  }
  plan.standalone = plan.standalone || flags.standalone;

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
                        " (from " + plan.origins["nnodes"] + "). Drop --standalone, or "
                        "--nnodes.");
    }
    plan.nodeRank = 0;
  }
  if (plan.nodeRank >= plan.nnodes) {
    throw LaunchError("node rank " + std::to_string(plan.nodeRank) + " (from " +
                      plan.origins["nodeRank"] + ") must be below the node count " +
                      std::to_string(plan.nnodes) + " (from " + plan.origins["nnodes"] + ").");
  }

  if (flags.nprocPerNode) {
    plan.nprocPerNode = resolveNproc(*flags.nprocPerNode, "--nproc-per-node", devices);
    plan.origins["nprocPerNode"] = "--nproc-per-node";
  } else if (auto petNproc = lookup(env, "PET_NPROC_PER_NODE")) {
    plan.nprocPerNode = resolveNproc(*petNproc, "PET_NPROC_PER_NODE", devices);
    plan.origins["nprocPerNode"] = "PET_NPROC_PER_NODE";
  } else {
    plan.origins["nprocPerNode"] = "default";
  }
  if (static_cast<long long>(plan.nnodes) * plan.nprocPerNode > kIntMax) {
    throw LaunchError("nnodes x nproc-per-node overflows: " + std::to_string(plan.nnodes) + " x " +
                      std::to_string(plan.nprocPerNode));
  }

  if (plan.standalone) {
    plan.masterAddr = "127.0.0.1";
    plan.masterPort = flags.masterPort.value_or(0);  // 0: the launcher picks a free one
    plan.origins["masterAddr"] = plan.origins["masterPort"] = "--standalone";
  } else {
    if (flags.masterAddr) {
      plan.masterAddr = *flags.masterAddr;
      plan.origins["masterAddr"] = "--master-addr";
    } else if (auto addr = readMasterAddr(env)) {
      plan.masterAddr = addr->first;
      plan.origins["masterAddr"] = addr->second;
    } else if (plan.nnodes > 1) {
      const bool mpi = plan.source == "openmpi" || plan.source == "pmi";
      throw EnvError("MASTER_ADDR", std::nullopt,
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
    } else if (auto port = readMasterPort(env)) {
      plan.masterPort = port->value;
      plan.origins["masterPort"] = port->origin;
    } else {
      plan.origins["masterPort"] = "default";
    }
  }

  if (flags.maxRestarts) {
    plan.maxRestarts = *flags.maxRestarts;
    plan.origins["maxRestarts"] = "--max-restarts";
  } else if (auto restarts = readInt(env, "PET_MAX_RESTARTS", 0, 1000)) {
    plan.maxRestarts = restarts->value;
    plan.origins["maxRestarts"] = "PET_MAX_RESTARTS";
  } else {
    plan.origins["maxRestarts"] = "default";
  }
  return plan;
}

std::map<std::string, std::string> workerEnvironment(const LaunchPlan& plan, int localRank,
                                                     const WorkerEnvOptions& options) {
  const std::string rank = std::to_string(plan.globalRank(localRank));
  const std::string worldSize = std::to_string(plan.worldSize());
  std::map<std::string, std::string> env{
      {"RANK", rank},
      {"LOCAL_RANK", std::to_string(localRank)},
      {"WORLD_SIZE", worldSize},
      {"LOCAL_WORLD_SIZE", std::to_string(plan.nprocPerNode)},
      {"GROUP_RANK", std::to_string(plan.nodeRank)},
      {"GROUP_WORLD_SIZE", std::to_string(plan.nnodes)},
      {"ROLE_NAME", "default"},
      {"ROLE_RANK", rank},
      {"ROLE_WORLD_SIZE", worldSize},
      {"MASTER_ADDR", plan.masterAddr},
      {"MASTER_PORT", std::to_string(plan.masterPort)},
      {"TORCHELASTIC_RESTART_COUNT", std::to_string(options.restartCount)},
      {"TORCHELASTIC_MAX_RESTARTS", std::to_string(plan.maxRestarts)},
      // The runtime reads either; a stale one inherited from the pod must not disagree.
      {"DDPRUN_RESTART_COUNT", std::to_string(options.restartCount)},
  };
  if (options.ompNumThreads > 0) env["OMP_NUM_THREADS"] = std::to_string(options.ompNumThreads);
  if (!options.backend.empty()) env["DDPRUN_BACKEND"] = options.backend;
  if (options.rendezvousTimeoutSeconds > 0) {
    env["DDPRUN_RDZV_TIMEOUT"] = std::to_string(options.rendezvousTimeoutSeconds);
  }
  return env;
}

std::string describePlanJson(const LaunchPlan& plan, const std::vector<std::string>& program,
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
  out["origins"] = plan.origins;
  out["program"] = program;
  out["workers"] = nlohmann::ordered_json::array();
  for (int local = 0; local < plan.nprocPerNode; ++local) {
    out["workers"].push_back({{"rank", plan.globalRank(local)},
                              {"localRank", local},
                              {"env", workerEnvironment(plan, local, options)}});
  }
  return out.dump(2);
}

}  // namespace ddp::launcher
