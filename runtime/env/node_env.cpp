#include "runtime/env/node_env.h"

#include "runtime/env/env_readers.h"
#include "runtime/env/variables.h"

namespace ddp::env {
namespace {

using namespace detail;

void setNodes(NodeEnv& out, const IntVar& nnodes, const IntVar& nodeRank) {
  out.nnodes = nnodes.value;
  out.nodeRank = nodeRank.value;
  out.origins["nnodes"] = nnodes.name;
  out.origins["nodeRank"] = nodeRank.name;
}

// RANK is the pod rank, WORLD_SIZE counts processes (>= v1.7, with PET_NNODES) or pods.
void resolvePyTorchJobNode(const EnvMap& env, NodeEnv& out) {
  const auto rank = *readInt(env, var::kRank, 0, kIntMax);
  const auto worldSize = *readInt(env, var::kWorldSize, 1, kIntMax);
  checkRankBelow(rank, worldSize);
  out.source = EnvSource::kPyTorchJob;
  IntVar nodeRank = rank;
  if (auto petNodeRank = readInt(env, var::kPetNodeRank, 0, kIntMax)) {
    checkAgree(rank, *petNodeRank, "The operator sets both to the pod rank; fix the pod spec.");
    nodeRank = *petNodeRank;
  }
  const auto petNnodes = readNnodes(env);
  if (!petNnodes) return setNodes(out, worldSize, nodeRank);  // before v1.7: pods
  const auto nproc = readNprocPerNode(env);
  const int perNode = nproc && !nproc->symbolic ? nproc->count : 1;
  if (static_cast<long long>(petNnodes->value) * perNode != worldSize.value) {
    throw EnvError(var::kWorldSize, worldSize.raw,
                   "PET_NNODES x nprocPerNode = " + std::to_string(petNnodes->value) + " x " +
                       std::to_string(perNode),
                   worldSize.raw, "The operator derives both from the job spec; fix the pod spec.");
  }
  setNodes(out, *petNnodes, nodeRank);
}

void resolveTrainerV2Node(const EnvMap& env, const NodeFlags& given, NodeEnv& out) {
  out.source = EnvSource::kTrainerV2;
  if (const auto range = given.nnodes ? std::nullopt : parsePetNnodesRange(env)) {
    out.nnodes = range->min;
    if (range->elastic()) out.maxNodes = range->max;
    out.origins["nnodes"] = var::kPetNnodes;
  }
  if (auto nodeRank = readInt(env, var::kPetNodeRank, 0, kIntMax)) {
    if (!given.nnodes && !given.nodeRank && nodeRank->value >= out.nnodes) {
      throw EnvError(nodeRank->name, nodeRank->raw,
                     "a node rank below the node count " + std::to_string(out.nnodes) + " (from " +
                         out.origins["nnodes"] + ")",
                     "node " + nodeRank->raw + ", which does not exist",
                     "Check PET_NODE_RANK and PET_NNODES in the pod spec.");
    }
    out.nodeRank = nodeRank->value;
    out.origins["nodeRank"] = nodeRank->name;
  }
}

}  // namespace

NodeEnv resolveNodeEnv(const EnvMap& env, const NodeFlags& given) {
  if (auto localRank = lookup(env, var::kLocalRank)) {
    throw EnvError(var::kLocalRank, *localRank, "a node's environment (no LOCAL_RANK)",
                   "the environment of a worker that a launcher already started",
                   "ddprun is running inside another launcher's worker; start the program "
                   "directly, or unset LOCAL_RANK.");
  }
  requirePairs(env);

  NodeEnv out;
  for (const char* field : {"nnodes", "nodeRank", "nprocPerNode", "masterAddr", "masterPort"}) {
    out.origins[field] = "default";
  }
  if (const auto mpi = readMpi(env)) {
    out.source = mpi->source;
    setNodes(out, mpi->worldSize, mpi->rank);
  } else if (env.count(var::kRank) != 0) {
    resolvePyTorchJobNode(env, out);
  } else if (env.count(var::kPetNnodes) != 0 || env.count(var::kPetNodeRank) != 0 ||
             env.count(var::kPetNprocPerNode) != 0 || env.count(var::kPetMasterAddr) != 0) {
    resolveTrainerV2Node(env, given, out);
  }
  if (const auto nproc = given.nprocPerNode ? std::nullopt : readNprocPerNode(env)) {
    out.nprocPerNode = nproc->raw;
    out.origins["nprocPerNode"] = var::kPetNprocPerNode;
  }
  const auto master = readMaster(env, /*checkPet=*/true, !given.masterAddr, !given.masterPort);
  if (master.addr) {
    out.masterAddr = master.addr;
    out.origins["masterAddr"] = master.addrOrigin;
  }
  if (master.port) {
    out.masterPort = static_cast<std::uint16_t>(master.port->value);
    out.origins["masterPort"] = master.port->name;
  }
  return out;
}

}  // namespace ddp::env
