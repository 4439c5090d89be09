#include "runtime/env/cluster_env.h"

#include <unistd.h>

#include <sstream>
#include <utility>

#include "runtime/env/env_readers.h"
#include "runtime/env/value_parser.h"
#include "runtime/env/variables.h"

namespace ddp::env {
namespace {

using namespace detail;

EnvError needsLauncher(const NprocPerNode& nproc, const std::string& why) {
  const std::string found = nproc.symbolic ? "'" + nproc.raw + "'" : nproc.raw + " processes";
  return EnvError(var::kPetNprocPerNode, nproc.raw,
                  "1 process per node when the program runs without a launcher", found + "; " + why,
                  "Run the pod's command through the launcher, `ddprun --nproc-per-node " +
                      nproc.raw +
                      " <program> ...`, which starts the local processes and "
                      "gives each its rank.");
}

// Used when no variable names the node: the node count holds when every node runs
// localWorldSize processes; the node rank only when ranks also fill nodes in blocks (torchrun;
// mpirun -map-by slot, as MPIJob manifests use). MPI gives no node index at all.
void deriveNodes(ClusterEnv& out, const IntVar& rank, const IntVar& worldSize,
                 const IntVar& localWorldSize) {
  const int perNode = localWorldSize.value;
  if (worldSize.value % perNode != 0) return;
  out.numNodes = worldSize.value / perNode;
  out.origins["numNodes"] = worldSize.name + "/" + localWorldSize.name;
  if (rank.value % perNode != out.localRank) return;
  out.nodeRank = rank.value / perNode;
  out.origins["nodeRank"] = rank.name + "/" + localWorldSize.name;
}

void setDefaults(ClusterEnv& out) {
  for (const char* field : {"rank", "worldSize", "localRank", "localWorldSize", "nodeRank",
                            "numNodes", "masterAddr", "masterPort", "restartCount"}) {
    out.origins[field] = "default";
  }
}

void setRanks(ClusterEnv& out, const IntVar& rank, const IntVar& worldSize) {
  out.rank = rank.value;
  out.worldSize = worldSize.value;
  out.origins["rank"] = rank.name;
  out.origins["worldSize"] = worldSize.name;
}

void setLocal(ClusterEnv& out, const std::optional<IntVar>& localRank,
              const std::optional<IntVar>& localWorldSize) {
  if (!localRank || !localWorldSize) return;
  out.localRank = localRank->value;
  out.localWorldSize = localWorldSize->value;
  out.origins["localRank"] = localRank->name;
  out.origins["localWorldSize"] = localWorldSize->name;
}

void resolveTorchrun(const EnvMap& env, ClusterEnv& out) {
  const auto localRank = *readInt(env, var::kLocalRank, 0, kIntMax);
  const auto localWorldSize = *readInt(env, var::kLocalWorldSize, 1, kIntMax);
  auto rank = readInt(env, var::kRank, 0, kIntMax);
  auto worldSize = readInt(env, var::kWorldSize, 1, kIntMax);
  if (!rank || !worldSize) {
    throw EnvError(var::kRank, std::nullopt, "RANK and WORLD_SIZE alongside " + show(localRank),
                   "neither",
                   "torchrun sets all four; set RANK and WORLD_SIZE too, or unset "
                   "LOCAL_RANK and LOCAL_WORLD_SIZE.");
  }
  checkRankBelow(*rank, *worldSize);
  checkNotAbove(localWorldSize, *worldSize);
  checkRankBelow(localRank, localWorldSize);

  out.source = EnvSource::kTorchrun;
  setRanks(out, *rank, *worldSize);
  setLocal(out, localRank, localWorldSize);
  deriveNodes(out, *rank, *worldSize, localWorldSize);
  if (auto groupWorldSize = readInt(env, var::kGroupWorldSize, 1, worldSize->value)) {
    out.numNodes = groupWorldSize->value;
    out.origins["numNodes"] = groupWorldSize->name;
  }
  if (auto groupRank = readInt(env, var::kGroupRank, 0, kIntMax)) {
    const bool numNodesKnown = out.origins["numNodes"] != "default";
    if (numNodesKnown && groupRank->value >= out.numNodes) {
      throw EnvError(groupRank->name, groupRank->raw,
                     "a node rank below the node count " + std::to_string(out.numNodes) + " (" +
                         out.origins["numNodes"] + ")",
                     "node " + groupRank->raw + ", which does not exist",
                     "Check that GROUP_RANK and WORLD_SIZE/LOCAL_WORLD_SIZE come from the same "
                     "launch.");
    }
    out.nodeRank = groupRank->value;
    out.origins["nodeRank"] = groupRank->name;
  }

  // See Note [Environment precedence]: mpirun may have started the workers or the launchers.
  const auto mpi = readMpi(env);
  if (!mpi) return;
  const bool perWorker = mpi->rank.value == out.rank && mpi->worldSize.value == out.worldSize;
  const bool perNode = mpi->rank.value == out.nodeRank && mpi->worldSize.value == out.numNodes;
  if (perWorker || perNode) return;
  throw EnvError(mpi->rank.name, mpi->rank.raw,
                 "with " + show(mpi->worldSize) + " either this worker's " + show(*rank) + "/" +
                     show(*worldSize) + " (mpirun started the workers) or its node's rank " +
                     std::to_string(out.nodeRank) + " of " + std::to_string(out.numNodes) +
                     " (mpirun started one launcher per node)",
                 "neither", kStaleHint);
}

void resolveMpi(const RankLayout& mpi, const EnvMap& env, ClusterEnv& out) {
  out.source = mpi.source;
  setRanks(out, mpi.rank, mpi.worldSize);
  setLocal(out, mpi.localRank, mpi.localWorldSize);
  if (mpi.localRank && mpi.localWorldSize) {
    deriveNodes(out, mpi.rank, mpi.worldSize, *mpi.localWorldSize);
  }
  if (auto rank = readInt(env, var::kRank, 0, kIntMax)) checkAgree(mpi.rank, *rank, kStaleHint);
  if (auto worldSize = readInt(env, var::kWorldSize, 1, kIntMax)) {
    checkAgree(mpi.worldSize, *worldSize, kStaleHint);
  }
}

void resolvePyTorchJob(const EnvMap& env, ClusterEnv& out) {
  const auto rank = *readInt(env, var::kRank, 0, kIntMax);
  const auto worldSize = *readInt(env, var::kWorldSize, 1, kIntMax);
  checkRankBelow(rank, worldSize);
  if (auto nproc = readNprocPerNode(env); nproc && !nproc->symbolic && nproc->count > 1) {
    throw needsLauncher(*nproc, "RANK is then the pod rank and " + show(worldSize) +
                                    " counts every process, so one process cannot be all of "
                                    "this pod's ranks");
  }

  out.source = EnvSource::kPyTorchJob;
  setRanks(out, rank, worldSize);
  // One process per pod: the pod rank is the node rank, the pod count the node count.
  out.nodeRank = rank.value;
  out.numNodes = worldSize.value;
  out.origins["nodeRank"] = rank.name;
  out.origins["numNodes"] = worldSize.name;
  if (auto nodeRank = readInt(env, var::kPetNodeRank, 0, kIntMax)) {
    checkAgree(rank, *nodeRank, kStaleHint);
    out.origins["nodeRank"] = nodeRank->name;
  }
  if (auto numNodes = readNnodes(env)) {
    checkAgree(worldSize, *numNodes, kStaleHint);
    out.origins["numNodes"] = numNodes->name;
  }
}

void resolveTrainerV2(const EnvMap& env, ClusterEnv& out) {
  const auto numNodes = readNnodes(env);
  if (auto nproc = readNprocPerNode(env); nproc && (nproc->symbolic || nproc->count > 1)) {
    throw needsLauncher(*nproc, nproc->symbolic ? "a device count only a launcher resolves"
                                                : "one process cannot be all of this node's ranks");
  }
  const auto nodeRank = readInt(env, var::kPetNodeRank, 0, kIntMax);

  out.source = EnvSource::kTrainerV2;
  if (numNodes) {
    out.worldSize = out.numNodes = numNodes->value;
    out.origins["worldSize"] = out.origins["numNodes"] = numNodes->name;
  }
  if (nodeRank) {
    if (nodeRank->value >= out.numNodes) {
      throw EnvError(nodeRank->name, nodeRank->raw,
                     "a node rank below " +
                         (numNodes ? show(*numNodes) : std::string("1 (PET_NNODES is unset)")),
                     "node " + nodeRank->raw + ", which does not exist",
                     "Check PET_NODE_RANK and PET_NNODES in the pod spec.");
    }
    out.rank = out.nodeRank = nodeRank->value;
    out.origins["rank"] = out.origins["nodeRank"] = nodeRank->name;
  }
}

void resolveMaster(const EnvMap& env, ClusterEnv& out) {
  // Under torchrun PET_MASTER_* only fill gaps (see Note [Environment precedence]).
  const auto master = readMaster(env, out.source != EnvSource::kTorchrun);
  if (master.addr) {
    out.masterAddr = *master.addr;
    out.origins["masterAddr"] = master.addrOrigin;
  } else if (out.worldSize == 1) {
    out.masterAddr = std::string(kDefaultMasterAddr);
  } else if (out.source == EnvSource::kOpenMpi || out.source == EnvSource::kPmi) {
    out.origins["masterAddr"] = "unset";  // the MPI bootstrap finds rank 0
  } else {
    const std::string variable =
        out.source == EnvSource::kTrainerV2 ? var::kPetMasterAddr : var::kMasterAddr;
    throw EnvError(
        variable, std::nullopt,
        "the host of rank 0 because the world size is " + std::to_string(out.worldSize) +
            " (from " + out.origins["worldSize"] + "); looked at MASTER_ADDR and PET_MASTER_ADDR",
        "neither set", "Set MASTER_ADDR (a PyTorchJob sets it only when it has a Master replica).");
  }
  if (master.port) {
    out.masterPort = static_cast<std::uint16_t>(master.port->value);
    out.masterPortFromEnvironment = true;
    out.origins["masterPort"] = master.port->name;
  }
}

void resolveRestartCount(const EnvMap& env, ClusterEnv& out) {
  const auto ours = readInt(env, var::kRestartCount, 0, kIntMax);
  const auto torchrun = readInt(env, var::kTorchelasticRestartCount, 0, kIntMax);
  if (ours && torchrun) checkAgree(*ours, *torchrun, kStaleHint);
  if (const auto& chosen = ours ? ours : torchrun) {
    out.restartCount = chosen->value;
    out.origins["restartCount"] = chosen->name;
  }
}

}  // namespace

EnvError::EnvError(std::string variable, std::optional<std::string> value,
                   const std::string& expected, const std::string& found, const std::string& hint)
    : PermanentError(describeBadValue(variable, value, expected, found, hint)),
      variable_(std::move(variable)),
      value_(value.value_or("")),
      isSet_(value.has_value()) {}

EnvMap currentEnvironment() {
  EnvMap env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    const auto equals = text.find('=');
    if (equals == std::string_view::npos) continue;
    env.emplace(std::string(text.substr(0, equals)), std::string(text.substr(equals + 1)));
  }
  return env;
}

std::string_view sourceName(EnvSource source) {
  switch (source) {
    case EnvSource::kDefault:
      return "default";
    case EnvSource::kTorchrun:
      return "torchrun";
    case EnvSource::kPyTorchJob:
      return "pytorchjob";
    case EnvSource::kTrainerV2:
      return "trainer-v2";
    case EnvSource::kOpenMpi:
      return "openmpi";
    case EnvSource::kPmi:
      return "pmi";
  }
  return "unknown";
}

std::optional<std::string> lookup(const EnvMap& env, const std::string& name) {
  const auto it = env.find(name);
  if (it == env.end()) return std::nullopt;
  return it->second;
}

int parseInt(const std::string& variable, const std::string& value, int min, int max) {
  const auto parsed = parseInteger(value, min, max);
  if (parsed.value) return static_cast<int>(*parsed.value);
  throw EnvError(variable, value, integerExpectation(min, max), parsed.found,
                 "Fix " + variable + " where it is set (launcher, pod spec or shell).");
}

std::optional<NodeCountRange> parsePetNnodesRange(const EnvMap& env) {
  const std::string name = var::kPetNnodes;
  auto raw = lookup(env, name);
  if (!raw) return std::nullopt;
  const auto colon = raw->find(':');
  if (colon == std::string::npos) {
    const int count = parseInt(name, *raw, 1, kIntMax);
    return NodeCountRange{count, count};
  }
  const auto min = parseInteger(std::string_view(*raw).substr(0, colon), 1, kIntMax).value;
  const auto max = parseInteger(std::string_view(*raw).substr(colon + 1), 1, kIntMax).value;
  if (!min || !max || *min > *max) {
    throw EnvError(name, *raw, "a node count N or MIN:MAX with decimal integers 1 <= MIN <= MAX",
                   "'" + *raw + "'", "Fix " + name + " where it is set (pod spec or shell).");
  }
  return NodeCountRange{static_cast<int>(*min), static_cast<int>(*max)};
}

std::optional<int> parsePetNnodes(const EnvMap& env) {
  const auto range = parsePetNnodesRange(env);
  if (!range) return std::nullopt;
  if (range->elastic()) {
    const std::string name = var::kPetNnodes;
    throw EnvError(name, *lookup(env, name), "a fixed node count (N, or MIN:MAX with MIN == MAX)",
                   "the elastic range " + *lookup(env, name),
                   "An elastic range needs a rendezvous that assigns the node ranks: start the "
                   "program under `ddprun --rdzv-backend c10d` (an elastic PyTorchJob sets "
                   "PET_RDZV_BACKEND=c10d), or give the job equal min and max replicas.");
  }
  return range->min;
}

ClusterEnv resolveClusterEnv(const EnvMap& env) {
  requirePairs(env);
  requireTogether(env, var::kLocalRank, var::kLocalWorldSize);

  ClusterEnv out;
  setDefaults(out);
  if (env.count(var::kLocalRank) != 0) {
    resolveTorchrun(env, out);
  } else if (const auto mpi = readMpi(env)) {
    resolveMpi(*mpi, env, out);
  } else if (env.count(var::kRank) != 0) {
    resolvePyTorchJob(env, out);
  } else if (env.count(var::kPetNnodes) != 0 || env.count(var::kPetNprocPerNode) != 0 ||
             env.count(var::kPetNodeRank) != 0) {
    resolveTrainerV2(env, out);
  }
  resolveMaster(env, out);
  resolveRestartCount(env, out);
  return out;
}

std::string describe(const ClusterEnv& clusterEnv) {
  std::string host = clusterEnv.masterAddr;
  if (host.empty()) {
    host = "<mpi-bootstrap>";
  } else if (host.find(':') != std::string::npos) {
    host = "[" + host + "]";  // IPv6
  }
  std::ostringstream line;
  line << "rank=" << clusterEnv.rank << " world_size=" << clusterEnv.worldSize
       << " local_rank=" << clusterEnv.localRank
       << " local_world_size=" << clusterEnv.localWorldSize << " node_rank=" << clusterEnv.nodeRank
       << " num_nodes=" << clusterEnv.numNodes << " master=" << host << ":" << clusterEnv.masterPort
       << " source=" << sourceName(clusterEnv.source)
       << " restart_count=" << clusterEnv.restartCount;
  return line.str();
}

}  // namespace ddp::env
