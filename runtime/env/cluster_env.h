// Cluster environment resolution: whatever torchrun, ddprun's launcher, Kubeflow (PyTorchJob v1,
// Trainer v2) or MPI (Open MPI, MPICH, Intel MPI) put in the environment becomes one ClusterEnv
// describing THIS process. The facts behind the rules, with sources: k8s-env-contract.md.
// Pure C++20: the launcher uses it too, and it is tested with plain maps.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ddp::env {

// Note [Environment precedence]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// resolveClusterEnv() takes the first source present, most specific first:
//
//  1. kTorchrun    LOCAL_RANK is set (torchrun and ddprun's launcher always set it): RANK,
//                  WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK (node rank),
//                  GROUP_WORLD_SIZE (else WORLD_SIZE / LOCAL_WORLD_SIZE), MASTER_ADDR/PORT.
//                  PET_* were the launcher's input and are not cross-checked: with c10d
//                  rendezvous MASTER_ADDR/PORT legitimately differ from PET_MASTER_ADDR/PORT.
//  2. kOpenMpi     OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}.
//     kPmi         PMI_RANK (PMI_ID in Hydra's PMI_PORT mode), PMI_SIZE, MPI_LOCALRANKID,
//                  MPI_LOCALNRANKS (MPICH, Intel MPI). OMPI wins when both are set.
//                  mpirun sets these per process, so they outrank RANK/WORLD_SIZE (which a pod
//                  spec may carry); those must agree when set. No master address is needed:
//                  masterAddr stays empty and the MPI bootstrap fills it in.
//                  OMPI_COMM_WORLD_NODE_RANK is a per-node process rank, not a node index, so
//                  nodeRank is derived only when ranks are laid out in blocks (-map-by slot).
//  3. kPyTorchJob  RANK and WORLD_SIZE, with or without PET_* (PyTorchJob < v1.7 and plain
//                  env:// set only RANK, WORLD_SIZE, MASTER_*). Without a launcher in the pod
//                  RANK is the POD rank: it is this process's rank only when
//                  PET_NPROC_PER_NODE is unset, 1 or auto/cpu/gpu/xpu (the operator counts
//                  those as 1 in WORLD_SIZE). An integer N > 1 is an error: the pod must run
//                  `ddprun --nproc-per-node N`, which starts the N local processes.
//  4. kTrainerV2   PET_NNODES / PET_NPROC_PER_NODE / PET_NODE_RANK without RANK (Trainer v2,
//                  or a PyTorchJob without a Master): rank = PET_NODE_RANK, world = PET_NNODES,
//                  valid only with one process per node (nproc unset or 1).
//  5. kDefault     none of the above: one process, rank 0 of 1, master 127.0.0.1.
//
// Everywhere:
//  - Variables come in pairs (RANK/WORLD_SIZE, LOCAL_RANK/LOCAL_WORLD_SIZE, the MPI ones): one
//    without the other is an error.
//  - A lower source that is also present must agree with the chosen one; the error names both.
//    Under torchrun, OMPI_* / PMI_* may describe the worker (mpirun started the workers) or its
//    launcher (mpirun started one launcher per node): they must match one of the two readings.
//  - MASTER_ADDR/MASTER_PORT win; PET_MASTER_ADDR/PET_MASTER_PORT are used when those are unset
//    and must be equal to them when both are set (except under torchrun, see 1).
//    worldSize > 1 without a master address is an error except for the MPI sources.
//  - PET_NNODES may be "N" or "min:max" with min == max; elastic ranges are rejected.
//  - restartCount: DDPRUN_RESTART_COUNT or TORCHELASTIC_RESTART_COUNT (equal if both set).

using EnvMap = std::map<std::string, std::string>;

// A copy of this process's environment (environ).
EnvMap currentEnvironment();

enum class EnvSource { kDefault, kTorchrun, kPyTorchJob, kTrainerV2, kOpenMpi, kPmi };

// "default", "torchrun", "pytorchjob", "trainer-v2", "openmpi", "pmi".
std::string_view sourceName(EnvSource source);

// torchrun's and Trainer v2's default; PyTorchJob always sets MASTER_PORT (its default 23456).
constexpr std::uint16_t kDefaultMasterPort = 29500;
constexpr std::string_view kDefaultMasterAddr = "127.0.0.1";
// Bad configuration is permanent: 1-127 under the operators' ExitCode restart policy.
constexpr int kConfigErrorExitCode = 2;

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
  int restartCount = 0;
};

// One key=value line: rank=.. world_size=.. local_rank=.. local_world_size=.. node_rank=..
// num_nodes=.. master=host:port source=.. restart_count=..
std::string describe(const ClusterEnv& clusterEnv);

// A variable that is set wrongly, or missing, or contradicting another one. The message reads
// "<VAR>=<value>: expected ...; found .... <what to do>" (or "<VAR> (unset): ...").
// Exit with kConfigErrorExitCode on it.
class EnvError : public std::runtime_error {
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

// Decimal digits only (no sign, no whitespace, no fraction) in [min, max]; EnvError naming
// `variable` otherwise.
int parseInt(const std::string& variable, const std::string& value, int min, int max);
// nullopt when `name` is unset; parseInt otherwise.
std::optional<int> parseIntVar(const EnvMap& env, const std::string& name, int min, int max);

// PET_NNODES: "N", or "MIN:MAX" from an elastic PyTorchJob, accepted only when MIN == MAX;
// nullopt when unset. Throws EnvError. (The launcher reads the node count with it too.)
std::optional<int> parsePetNnodes(const EnvMap& env);

// See Note [Environment precedence]. Throws EnvError.
ClusterEnv resolveClusterEnv(const EnvMap& env);

}  // namespace ddp::env
