#include "runtime/env/cluster_env.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <sstream>
#include <utility>

namespace ddp::env {
namespace {

constexpr int kIntMax = std::numeric_limits<int>::max();
constexpr int kPortMax = 65535;

bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isSpace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

bool allDigits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), isDigit);
}

// The value of `text` when it is plain decimal digits within [min, max].
std::optional<int> toInt(std::string_view text, int min, int max) {
  if (!allDigits(text)) return std::nullopt;
  long long parsed = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), parsed);
  if (error != std::errc() || end != text.data() + text.size() || parsed < min || parsed > max) {
    return std::nullopt;
  }
  return static_cast<int>(parsed);
}

std::string formatEnvError(const std::string& variable, const std::optional<std::string>& value,
                           const std::string& expected, const std::string& found,
                           const std::string& hint) {
  std::string message = value ? variable + "=" + *value : variable + " (unset)";
  message += ": expected " + expected + "; found " + found + ".";
  if (!hint.empty()) message += " " + hint;
  return message;
}

// An integer variable as read: its name and raw text for messages, its value for logic.
struct IntVar {
  std::string name;
  std::string raw;
  int value = 0;
};

std::string show(const IntVar& var) { return var.name + "=" + var.raw; }

std::optional<IntVar> readInt(const EnvMap& env, const std::string& name, int min, int max) {
  auto raw = lookup(env, name);
  if (!raw) return std::nullopt;
  const int value = parseInt(name, *raw, min, max);
  return IntVar{name, *raw, value};
}

EnvError missingPartner(const std::string& missing, const std::string& present,
                        const std::string& presentValue) {
  return EnvError(missing, std::nullopt, missing + " to be set together with " + present,
                  "only " + present + "=" + presentValue,
                  "Set both (launchers set them together) or unset " + present + ".");
}

// One variable of a pair without the other means a hand-edited or half-forwarded env.
void requireTogether(const EnvMap& env, const std::string& first, const std::string& second) {
  const auto firstValue = lookup(env, first);
  const auto secondValue = lookup(env, second);
  if (firstValue && !secondValue) throw missingPartner(second, first, *firstValue);
  if (secondValue && !firstValue) throw missingPartner(first, second, *secondValue);
}

void checkRankBelow(const IntVar& rank, const IntVar& size) {
  if (rank.value < size.value) return;
  throw EnvError(rank.name, rank.raw,
                 "a value below " + show(size) + " (ranks run from 0 to " +
                     std::to_string(size.value - 1) + ")",
                 "rank " + rank.raw + ", which does not exist",
                 "Check that " + rank.name + " and " + size.name + " come from the same launch.");
}

void checkNotAbove(const IntVar& part, const IntVar& whole) {
  if (part.value <= whole.value) return;
  throw EnvError(part.name, part.raw,
                 "at most " + show(whole) + " (the processes of one node are among all processes)",
                 "more processes on this node than in the whole job",
                 "Check that " + part.name + " and " + whole.name + " come from the same launch.");
}

// `other` is a lower-precedence variable describing the same quantity as `chosen`.
void checkAgree(const IntVar& chosen, const IntVar& other, const std::string& hint) {
  if (chosen.value == other.value) return;
  throw EnvError(other.name, other.raw, "the same value as " + show(chosen), "a different value",
                 hint);
}

const std::string kStaleHint =
    "Two sources describe this process differently; unset the stale one (e.g. a variable from "
    "the pod spec or an mpirun -x list) or make them equal.";

// rank/worldSize plus optional local rank/size, as one launcher reported them.
struct RankLayout {
  EnvSource source = EnvSource::kDefault;
  IntVar rank;
  IntVar worldSize;
  std::optional<IntVar> localRank;
  std::optional<IntVar> localWorldSize;
};

RankLayout readLayout(const EnvMap& env, EnvSource source, IntVar rank, const std::string& sizeName,
                      const std::string& localRankName, const std::string& localSizeName) {
  auto worldSize = readInt(env, sizeName, 1, kIntMax);
  if (!worldSize) throw missingPartner(sizeName, rank.name, rank.raw);
  RankLayout layout{source, std::move(rank), std::move(*worldSize),
                    readInt(env, localRankName, 0, kIntMax),
                    readInt(env, localSizeName, 1, kIntMax)};
  checkRankBelow(layout.rank, layout.worldSize);
  if (layout.localWorldSize) {
    checkNotAbove(*layout.localWorldSize, layout.worldSize);
    if (layout.localRank) checkRankBelow(*layout.localRank, *layout.localWorldSize);
  }
  return layout;
}

// Open MPI if present (cross-checked against PMI), else MPICH / Intel MPI, else nothing.
std::optional<RankLayout> readMpi(const EnvMap& env) {
  std::optional<RankLayout> openMpi;
  if (auto rank = readInt(env, "OMPI_COMM_WORLD_RANK", 0, kIntMax)) {
    openMpi = readLayout(env, EnvSource::kOpenMpi, std::move(*rank), "OMPI_COMM_WORLD_SIZE",
                         "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE");
  }
  // Hydra sets PMI_ID instead of PMI_RANK in PMI_PORT mode.
  auto pmiRank = readInt(env, "PMI_RANK", 0, kIntMax);
  if (!pmiRank) pmiRank = readInt(env, "PMI_ID", 0, kIntMax);
  if (!pmiRank) {
    if (auto size = lookup(env, "PMI_SIZE")) throw missingPartner("PMI_RANK", "PMI_SIZE", *size);
    return openMpi;
  }
  RankLayout pmi = readLayout(env, EnvSource::kPmi, std::move(*pmiRank), "PMI_SIZE",
                              "MPI_LOCALRANKID", "MPI_LOCALNRANKS");
  if (!openMpi) return pmi;
  checkAgree(openMpi->rank, pmi.rank, kStaleHint);
  checkAgree(openMpi->worldSize, pmi.worldSize, kStaleHint);
  return openMpi;
}

std::optional<IntVar> readNnodes(const EnvMap& env) {
  auto nodes = parsePetNnodes(env);
  if (!nodes) return std::nullopt;
  return IntVar{"PET_NNODES", *lookup(env, "PET_NNODES"), *nodes};
}

struct NprocPerNode {
  std::string raw;
  int count = 1;
  bool symbolic = false;  // auto/cpu/gpu/xpu: a device count only a launcher can resolve
};

std::optional<NprocPerNode> readNprocPerNode(const EnvMap& env) {
  const std::string name = "PET_NPROC_PER_NODE";
  auto raw = lookup(env, name);
  if (!raw) return std::nullopt;
  if (*raw == "auto" || *raw == "cpu" || *raw == "gpu" || *raw == "xpu") {
    return NprocPerNode{*raw, 1, true};
  }
  const auto count = toInt(*raw, 1, kIntMax);
  if (!count) {
    throw EnvError(name, *raw, "a process count >= 1 or one of auto, cpu, gpu, xpu",
                   "'" + *raw + "'", "Fix nprocPerNode / numProcPerNode in the job spec.");
  }
  return NprocPerNode{*raw, *count, false};
}

EnvError needsLauncher(const NprocPerNode& nproc, const std::string& why) {
  const std::string found = nproc.symbolic ? "'" + nproc.raw + "'" : nproc.raw + " processes";
  return EnvError("PET_NPROC_PER_NODE", nproc.raw,
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
  const auto localRank = *readInt(env, "LOCAL_RANK", 0, kIntMax);
  const auto localWorldSize = *readInt(env, "LOCAL_WORLD_SIZE", 1, kIntMax);
  auto rank = readInt(env, "RANK", 0, kIntMax);
  auto worldSize = readInt(env, "WORLD_SIZE", 1, kIntMax);
  if (!rank || !worldSize) {
    throw EnvError("RANK", std::nullopt, "RANK and WORLD_SIZE alongside " + show(localRank),
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
  if (auto groupWorldSize = readInt(env, "GROUP_WORLD_SIZE", 1, worldSize->value)) {
    out.numNodes = groupWorldSize->value;
    out.origins["numNodes"] = groupWorldSize->name;
  }
  if (auto groupRank = readInt(env, "GROUP_RANK", 0, kIntMax)) {
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
  if (auto rank = readInt(env, "RANK", 0, kIntMax)) checkAgree(mpi.rank, *rank, kStaleHint);
  if (auto worldSize = readInt(env, "WORLD_SIZE", 1, kIntMax)) {
    checkAgree(mpi.worldSize, *worldSize, kStaleHint);
  }
}

void resolvePyTorchJob(const EnvMap& env, ClusterEnv& out) {
  const auto rank = *readInt(env, "RANK", 0, kIntMax);
  const auto worldSize = *readInt(env, "WORLD_SIZE", 1, kIntMax);
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
  if (auto nodeRank = readInt(env, "PET_NODE_RANK", 0, kIntMax)) {
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
  const auto nodeRank = readInt(env, "PET_NODE_RANK", 0, kIntMax);

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

std::optional<std::string> readAddr(const EnvMap& env, const std::string& name,
                                    const std::string& portName) {
  auto addr = lookup(env, name);
  if (!addr) return std::nullopt;
  const std::string expected = "the host name or IP address of rank 0";
  const std::string hint = "Set " + name + " to the host of rank 0, e.g. <job>-master-0.";
  if (addr->empty()) throw EnvError(name, *addr, expected, "an empty value", hint);
  if (std::any_of(addr->begin(), addr->end(), isSpace)) {
    throw EnvError(name, *addr, expected, "whitespace", hint);
  }
  // One colon is host:port; IPv6 addresses have at least two.
  if (std::count(addr->begin(), addr->end(), ':') == 1) {
    throw EnvError(name, *addr, "a host without a port", "host:port",
                   "Put the host in " + name + " and the port in " + portName + ".");
  }
  return addr;
}

void resolveMaster(const EnvMap& env, ClusterEnv& out) {
  // Under torchrun PET_MASTER_* only fill gaps (see Note [Environment precedence]).
  const bool checkPet = out.source != EnvSource::kTorchrun;

  const auto addr = readAddr(env, "MASTER_ADDR", "MASTER_PORT");
  std::optional<std::string> petAddr;
  if (checkPet || !addr) petAddr = readAddr(env, "PET_MASTER_ADDR", "PET_MASTER_PORT");
  if (addr && petAddr && *addr != *petAddr) {
    throw EnvError("PET_MASTER_ADDR", *petAddr, "the same host as MASTER_ADDR=" + *addr,
                   "a different host", kStaleHint);
  }
  if (addr || petAddr) {
    out.masterAddr = addr ? *addr : *petAddr;
    out.origins["masterAddr"] = addr ? "MASTER_ADDR" : "PET_MASTER_ADDR";
  } else if (out.worldSize == 1) {
    out.masterAddr = std::string(kDefaultMasterAddr);
  } else if (out.source == EnvSource::kOpenMpi || out.source == EnvSource::kPmi) {
    out.origins["masterAddr"] = "unset";  // the MPI bootstrap finds rank 0
  } else {
    const std::string variable =
        out.source == EnvSource::kTrainerV2 ? "PET_MASTER_ADDR" : "MASTER_ADDR";
    throw EnvError(
        variable, std::nullopt,
        "the host of rank 0 because the world size is " + std::to_string(out.worldSize) +
            " (from " + out.origins["worldSize"] + "); looked at MASTER_ADDR and PET_MASTER_ADDR",
        "neither set", "Set MASTER_ADDR (a PyTorchJob sets it only when it has a Master replica).");
  }

  const auto port = readInt(env, "MASTER_PORT", 1, kPortMax);
  std::optional<IntVar> petPort;
  if (checkPet || !port) petPort = readInt(env, "PET_MASTER_PORT", 1, kPortMax);
  if (port && petPort) checkAgree(*port, *petPort, kStaleHint);
  if (const auto& chosen = port ? port : petPort) {
    out.masterPort = static_cast<std::uint16_t>(chosen->value);
    out.origins["masterPort"] = chosen->name;
  }
}

void resolveRestartCount(const EnvMap& env, ClusterEnv& out) {
  const auto ours = readInt(env, "DDPRUN_RESTART_COUNT", 0, kIntMax);
  const auto torchrun = readInt(env, "TORCHELASTIC_RESTART_COUNT", 0, kIntMax);
  if (ours && torchrun) checkAgree(*ours, *torchrun, kStaleHint);
  if (const auto& chosen = ours ? ours : torchrun) {
    out.restartCount = chosen->value;
    out.origins["restartCount"] = chosen->name;
  }
}

}  // namespace

EnvError::EnvError(std::string variable, std::optional<std::string> value,
                   const std::string& expected, const std::string& found, const std::string& hint)
    : std::runtime_error(formatEnvError(variable, value, expected, found, hint)),
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
  if (const auto parsed = toInt(value, min, max)) return *parsed;
  std::string found;
  if (allDigits(value)) {
    long long parsed = 0;
    const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), parsed);
    found = error == std::errc() && parsed < min
                ? value + ", which is below " + std::to_string(min)
                : value + ", which is above " + std::to_string(max);
  } else if (value.empty()) {
    found = "an empty value";
  } else if (isSpace(value.front()) || isSpace(value.back())) {
    found = "whitespace around the number";
  } else if (value.front() == '-' && allDigits(std::string_view(value).substr(1))) {
    found = "a negative number";
  } else {
    found = "'" + value + "', which is not a whole decimal number";
  }
  throw EnvError(variable, value,
                 "a decimal integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]",
                 found, "Fix " + variable + " where it is set (launcher, pod spec or shell).");
}

std::optional<int> parseIntVar(const EnvMap& env, const std::string& name, int min, int max) {
  const auto raw = lookup(env, name);
  if (!raw) return std::nullopt;
  return parseInt(name, *raw, min, max);
}

// PET_NNODES: "N", or "MIN:MAX" from an elastic PyTorchJob, accepted only when MIN == MAX.
std::optional<int> parsePetNnodes(const EnvMap& env) {
  const std::string name = "PET_NNODES";
  auto raw = lookup(env, name);
  if (!raw) return std::nullopt;
  const auto colon = raw->find(':');
  if (colon == std::string::npos) return parseInt(name, *raw, 1, kIntMax);
  const auto min = toInt(std::string_view(*raw).substr(0, colon), 1, kIntMax);
  const auto max = toInt(std::string_view(*raw).substr(colon + 1), 1, kIntMax);
  if (!min || !max) {
    throw EnvError(name, *raw, "a node count N or MIN:MAX with decimal integers >= 1",
                   "'" + *raw + "'", "Fix " + name + " where it is set (pod spec or shell).");
  }
  if (*min != *max) {
    throw EnvError(name, *raw, "a fixed node count (N, or MIN:MAX with MIN == MAX)",
                   "the elastic range " + *raw,
                   "Elastic ranges are not supported: give the job equal min and max replicas "
                   "(elasticPolicy.minReplicas == maxReplicas).");
  }
  return *min;
}

ClusterEnv resolveClusterEnv(const EnvMap& env) {
  requireTogether(env, "RANK", "WORLD_SIZE");
  requireTogether(env, "LOCAL_RANK", "LOCAL_WORLD_SIZE");
  requireTogether(env, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE");
  requireTogether(env, "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE");
  requireTogether(env, "MPI_LOCALRANKID", "MPI_LOCALNRANKS");

  ClusterEnv out;
  setDefaults(out);
  if (env.count("LOCAL_RANK") != 0) {
    resolveTorchrun(env, out);
  } else if (const auto mpi = readMpi(env)) {
    resolveMpi(*mpi, env, out);
  } else if (env.count("RANK") != 0) {
    resolvePyTorchJob(env, out);
  } else if (env.count("PET_NNODES") != 0 || env.count("PET_NPROC_PER_NODE") != 0 ||
             env.count("PET_NODE_RANK") != 0) {
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
