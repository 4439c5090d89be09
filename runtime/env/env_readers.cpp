#include "runtime/env/env_readers.h"

#include "runtime/env/value_parser.h"
#include "runtime/env/variables.h"

namespace ddp::env::detail {
namespace {

std::optional<std::string> readAddr(const EnvMap& env, const std::string& name,
                                    const std::string& portName) {
  auto addr = lookup(env, name);
  if (!addr) return std::nullopt;
  if (const auto problem = checkBareHost(*addr)) {
    const std::string hint = problem->found == "host:port"
                                 ? "Put the host in " + name + " and the port in " + portName + "."
                                 : "Set " + name + " to the host of rank 0, e.g. <job>-master-0.";
    throw EnvError(name, *addr, problem->expected, problem->found, hint);
  }
  return addr;
}

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

}  // namespace

const std::string kStaleHint =
    "Two sources describe this process differently; unset the stale one (e.g. a variable from "
    "the pod spec or an mpirun -x list) or make them equal.";

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

void requireTogether(const EnvMap& env, const std::string& first, const std::string& second) {
  const auto firstValue = lookup(env, first);
  const auto secondValue = lookup(env, second);
  if (firstValue && !secondValue) throw missingPartner(second, first, *firstValue);
  if (secondValue && !firstValue) throw missingPartner(first, second, *secondValue);
}

void requirePairs(const EnvMap& env) {
  requireTogether(env, var::kRank, var::kWorldSize);
  requireTogether(env, var::kOmpiRank, var::kOmpiSize);
  requireTogether(env, var::kOmpiLocalRank, var::kOmpiLocalSize);
  requireTogether(env, var::kMpiLocalRankId, var::kMpiLocalNranks);
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

void checkAgree(const IntVar& chosen, const IntVar& other, const std::string& hint) {
  if (chosen.value == other.value) return;
  throw EnvError(other.name, other.raw, "the same value as " + show(chosen), "a different value",
                 hint);
}

std::optional<RankLayout> readMpi(const EnvMap& env) {
  std::optional<RankLayout> openMpi;
  if (auto rank = readInt(env, var::kOmpiRank, 0, kIntMax)) {
    openMpi = readLayout(env, EnvSource::kOpenMpi, std::move(*rank), var::kOmpiSize,
                         var::kOmpiLocalRank, var::kOmpiLocalSize);
  }
  auto pmiRank = readInt(env, var::kPmiRank, 0, kIntMax);
  if (!pmiRank) pmiRank = readInt(env, var::kPmiId, 0, kIntMax);
  if (!pmiRank) {
    if (auto size = lookup(env, var::kPmiSize))
      throw missingPartner(var::kPmiRank, var::kPmiSize, *size);
    return openMpi;
  }
  RankLayout pmi = readLayout(env, EnvSource::kPmi, std::move(*pmiRank), var::kPmiSize,
                              var::kMpiLocalRankId, var::kMpiLocalNranks);
  if (!openMpi) return pmi;
  checkAgree(openMpi->rank, pmi.rank, kStaleHint);
  checkAgree(openMpi->worldSize, pmi.worldSize, kStaleHint);
  return openMpi;
}

std::optional<IntVar> readNnodes(const EnvMap& env) {
  auto nodes = parsePetNnodes(env);
  if (!nodes) return std::nullopt;
  return IntVar{var::kPetNnodes, *lookup(env, var::kPetNnodes), *nodes};
}

std::optional<NprocPerNode> readNprocPerNode(const EnvMap& env) {
  const std::string name = var::kPetNprocPerNode;
  auto raw = lookup(env, name);
  if (!raw) return std::nullopt;
  if (*raw == "auto" || *raw == "cpu" || *raw == "gpu" || *raw == "xpu") {
    return NprocPerNode{*raw, 1, true};
  }
  const auto count = parseInteger(*raw, 1, kIntMax).value;
  if (!count) {
    throw EnvError(name, *raw, "a process count >= 1 or one of auto, cpu, gpu, xpu",
                   "'" + *raw + "'", "Fix nprocPerNode / numProcPerNode in the job spec.");
  }
  return NprocPerNode{*raw, static_cast<int>(*count), false};
}

MasterVars readMaster(const EnvMap& env, bool checkPet, bool readAddrs, bool readPorts) {
  MasterVars out;
  std::optional<std::string> addr, petAddr;
  if (readAddrs) addr = readAddr(env, var::kMasterAddr, var::kMasterPort);
  if (readAddrs && (checkPet || !addr)) {
    petAddr = readAddr(env, var::kPetMasterAddr, var::kPetMasterPort);
  }
  if (addr && petAddr && *addr != *petAddr) {
    throw EnvError(var::kPetMasterAddr, *petAddr,
                   std::string("the same host as ") + var::kMasterAddr + "=" + *addr,
                   "a different host", kStaleHint);
  }
  if (addr || petAddr) {
    out.addr = addr ? *addr : *petAddr;
    out.addrOrigin = addr ? var::kMasterAddr : var::kPetMasterAddr;
  }
  if (!readPorts) return out;
  const auto port = readInt(env, var::kMasterPort, 1, kPortMax);
  std::optional<IntVar> petPort;
  if (checkPet || !port) petPort = readInt(env, var::kPetMasterPort, 1, kPortMax);
  if (port && petPort) checkAgree(*port, *petPort, kStaleHint);
  out.port = port ? port : petPort;
  return out;
}

}  // namespace ddp::env::detail
