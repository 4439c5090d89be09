// Cluster environment resolution: whatever torchrun, ddprun's launcher, Kubeflow (PyTorchJob v1,
// Trainer v2) or MPI (Open MPI, MPICH, Intel MPI) put in the environment becomes one ClusterEnv
// describing THIS process. The facts behind the rules, with sources: k8s-env-contract.md.
// Pure C++20: the launcher uses it too, and it is tested with plain maps.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "runtime/error.h"

namespace ddp::env {

// Note [Environment precedence]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// One environment, two views, built from the same private readers (env_readers.h), so the
// two cannot read a variable differently:
//   process  resolveClusterEnv() -> ClusterEnv: who THIS process is (ddp::init, workers).
//   node     resolveNodeEnv()    -> NodeEnv: where THIS node is in the job and what it may
//            start (node_env.h; the launcher puts its flags on top of it).
// The first source present wins, most specific first. For each, what the two views take:
//
//  1. kTorchrun    LOCAL_RANK is set (torchrun and ddprun's launcher always set it).
//     process      RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK (node rank),
//                  GROUP_WORLD_SIZE (else WORLD_SIZE / LOCAL_WORLD_SIZE), MASTER_ADDR/PORT.
//                  PET_* were the launcher's input and are not cross-checked: with c10d
//                  rendezvous MASTER_ADDR/PORT legitimately differ from PET_MASTER_ADDR/PORT.
//     node         refused: a launcher inside another launcher's worker would overwrite the
//                  ranks it was given.
//  2. kOpenMpi     OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}.
//     kPmi         PMI_RANK (PMI_ID in Hydra's PMI_PORT mode), PMI_SIZE, MPI_LOCALRANKID,
//                  MPI_LOCALNRANKS (MPICH, Intel MPI). OMPI wins when both are set.
//     process      mpirun sets these per process, so they outrank RANK/WORLD_SIZE (which a
//                  pod spec may carry); those must agree when set. No master address is
//                  needed: masterAddr stays empty and the MPI bootstrap finds rank 0.
//                  OMPI_COMM_WORLD_NODE_RANK is a per-node process rank, not a node index,
//                  so nodeRank is derived only when ranks are laid out in blocks.
//     node         mpirun started one ddprun per node: MPI rank = node rank, MPI size =
//                  node count. More than one node needs MASTER_ADDR (mpirun -x).
//  3. kPyTorchJob  RANK and WORLD_SIZE, with or without PET_* (PyTorchJob < v1.7 and plain
//                  env:// set only RANK, WORLD_SIZE, MASTER_*). RANK is the POD rank.
//     process      this process's rank only when PET_NPROC_PER_NODE is unset, 1 or
//                  auto/cpu/gpu/xpu (the operator counts those as 1 in WORLD_SIZE). An
//                  integer N > 1 is an error: the pod must run `ddprun --nproc-per-node N`.
//     node         node rank = PET_NODE_RANK, else RANK (equal when both are set); node
//                  count = PET_NNODES, else WORLD_SIZE (pods, before v1.7). With PET_NNODES,
//                  WORLD_SIZE must be PET_NNODES x nprocPerNode (auto/cpu/gpu count as 1).
//  4. kTrainerV2   PET_NNODES / PET_NPROC_PER_NODE / PET_NODE_RANK without RANK (Trainer v2,
//                  or a PyTorchJob without a Master).
//     process      rank = PET_NODE_RANK, world = PET_NNODES, valid only with one process per
//                  node (nproc unset or 1).
//     node         PET_NNODES (default 1), PET_NODE_RANK (default 0); PET_MASTER_ADDR alone
//                  also selects this source.
//  5. kDefault     none of the above: one process, rank 0 of 1; one node.
//
// Everywhere, in both views:
//  - Variables come in pairs (RANK/WORLD_SIZE, LOCAL_RANK/LOCAL_WORLD_SIZE, the MPI ones): one
//    without the other is an error.
//  - A lower source that is also present must agree with the chosen one; the error names both.
//    Under torchrun, OMPI_* / PMI_* may describe the worker (mpirun started the workers) or its
//    launcher (mpirun started one launcher per node): they must match one of the two readings.
//  - MASTER_ADDR/MASTER_PORT win; PET_MASTER_ADDR/PET_MASTER_PORT are used when those are unset
//    and must be equal to them when both are set (except under torchrun, see 1). An address
//    is a bare host: `host:port` or whitespace is an error naming the variable.
//    worldSize > 1 without a master address is an error except for the MPI sources.
//  - PET_NNODES may be "N" or "min:max" with min == max; elastic ranges are rejected.
//  - Integers are decimal digits in range (value_parser.h), or an error naming the variable.
//  - restartCount (process): DDPRUN_RESTART_COUNT or TORCHELASTIC_RESTART_COUNT (equal if both).

using EnvMap = std::map<std::string, std::string>;

// A copy of this process's environment (environ).
EnvMap currentEnvironment();

enum class EnvSource { kDefault, kTorchrun, kPyTorchJob, kTrainerV2, kOpenMpi, kPmi };

// "default", "torchrun", "pytorchjob", "trainer-v2", "openmpi", "pmi".
std::string_view sourceName(EnvSource source);

// torchrun's and Trainer v2's default; PyTorchJob always sets MASTER_PORT (its default 23456).
constexpr std::uint16_t kDefaultMasterPort = 29500;
constexpr std::string_view kDefaultMasterAddr = "127.0.0.1";

struct ClusterEnv {
  int rank = 0;
  int worldSize = 1;
  int localRank = 0;
  int localWorldSize = 1;
  int nodeRank = 0;
  int numNodes = 1;
  // Empty only for the MPI sources: the address of rank 0 then comes from the MPI bootstrap.
  std::string masterAddr;
  std::uint16_t masterPort = kDefaultMasterPort;
  EnvSource source = EnvSource::kDefault;
  // Field name ("rank", "worldSize", ..., "masterAddr", "masterPort", "restartCount") -> the
  // variable it came from, "default", "unset" (masterAddr under MPI) or a derivation such as
  // "WORLD_SIZE/LOCAL_WORLD_SIZE".
  std::map<std::string, std::string> origins;
  // Whether a variable set masterPort (else it is kDefaultMasterPort): a lone process with
  // no port configured takes a free one instead.
  bool masterPortFromEnvironment = false;
  int restartCount = 0;
};

// One key=value line: rank=.. world_size=.. local_rank=.. local_world_size=.. node_rank=..
// num_nodes=.. master=host:port source=.. restart_count=..
std::string describe(const ClusterEnv& clusterEnv);

// A variable that is set wrongly, or missing, or contradicting another one. The message reads
// "<VAR>=<value>: expected ...; found .... <what to do>" (or "<VAR> (unset): ...").
// A PermanentError: the process exits kExitUsage (Note [Two error families]).
class EnvError : public PermanentError {
 public:
  // value is nullopt when the variable is unset.
  EnvError(std::string variable, std::optional<std::string> value, const std::string& expected,
           const std::string& found, const std::string& hint);

  const std::string& variable() const { return variable_; }
  // The value found; empty when the variable is unset (see isSet()).
  const std::string& value() const { return value_; }
  bool isSet() const { return isSet_; }

 private:
  std::string variable_;
  std::string value_;
  bool isSet_;
};

std::optional<std::string> lookup(const EnvMap& env, const std::string& name);

// parseInteger (value_parser.h) in [min, max], or an EnvError naming `variable`.
int parseInt(const std::string& variable, const std::string& value, int min, int max);

// A node count as torchrun's --nnodes writes it: N (min == max), or MIN:MAX (elastic).
struct NodeCountRange {
  int min = 1;
  int max = 1;
  bool elastic() const { return min != max; }
};

// PET_NNODES: "N", or "MIN:MAX" (1 <= MIN <= MAX) from an elastic PyTorchJob; nullopt when
// unset. Throws EnvError. An elastic range is for ddprun's c10d rendezvous (the launcher's
// node view reads it with this).
std::optional<NodeCountRange> parsePetNnodesRange(const EnvMap& env);

// PET_NNODES as a fixed node count (MIN:MAX only when MIN == MAX); nullopt when unset.
// Throws EnvError, for an elastic range too: only a launcher's rendezvous can resolve it.
std::optional<int> parsePetNnodes(const EnvMap& env);

// See Note [Environment precedence]. Throws EnvError.
ClusterEnv resolveClusterEnv(const EnvMap& env);

}  // namespace ddp::env
