// What ddprun starts on this node, resolved from its flags and the node's environment.
//
// Note [Node-level resolution]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// runtime/env/cluster_env.h resolves one PROCESS; the launcher resolves one NODE: how many
// nodes, which one this is, how many workers it starts, where rank 0's store lives. Every
// field comes from the first of:
//
//   1. its flag (torchrun's names: --nnodes, --node-rank, --nproc-per-node, --master-addr,
//      --master-port, --max-restarts, --standalone). Flags win, as in torchrun.
//   2. the environment, by source (the facts: ../shared/k8s-env-contract.md):
//      openmpi/pmi  OMPI_COMM_WORLD_RANK/SIZE or PMI_RANK/PMI_SIZE: mpirun started one
//                   ddprun per node, so the MPI rank is the node rank and the MPI size the
//                   node count. No master address: set MASTER_ADDR (mpirun -x), or run
//                   the program itself under mpirun, which finds rank 0 through MPI.
//      pytorchjob   RANK and WORLD_SIZE (with or without PET_*): RANK is the POD rank.
//                   Node count = PET_NNODES, else WORLD_SIZE (operators before v1.7 set
//                   WORLD_SIZE = pods). Node rank = PET_NODE_RANK, else RANK; they must
//                   agree. With PET_NNODES, WORLD_SIZE must be PET_NNODES x nprocPerNode
//                   when nprocPerNode is a number, PET_NNODES when it is auto/cpu/gpu
//                   (the operator counts those as 1).
//      trainer-v2   PET_* without RANK: PET_NNODES (default 1), PET_NODE_RANK (default 0).
//      default      none of them: one node.
//      Master: MASTER_ADDR/MASTER_PORT, else PET_MASTER_ADDR/PET_MASTER_PORT (equal when
//      both are set), else 127.0.0.1:29500 on one node; more than one node without an
//      address is an error. nprocPerNode: PET_NPROC_PER_NODE, else 1. maxRestarts:
//      PET_MAX_RESTARTS, else 0. standalone: PET_STANDALONE, where the operator's empty
//      value means true.
//   nprocPerNode "auto" is one worker per visible GPU, else 1; "gpu" the GPU count (an
//   error without GPUs); "cpu" the CPU count.
//
// A worker environment (LOCAL_RANK set) is refused: ddprun would overwrite the ranks of the
// launcher that started it. Errors are env::EnvError (a variable) or LaunchError (a flag).
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/env/cluster_env.h"

namespace ddp::launcher {

// A flag that is malformed or contradicts another: exit kExitUsage.
class LaunchError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The command line; unset fields come from the environment.
struct LaunchFlags {
  std::optional<std::string> nprocPerNode;  // "N", auto, cpu, gpu
  std::optional<int> nnodes;
  std::optional<int> nodeRank;
  std::optional<std::string> masterAddr;
  std::optional<int> masterPort;
  std::optional<int> maxRestarts;
  bool standalone = false;
};

// What the machine has, passed in so that tests choose it.
struct DeviceCounts {
  int gpus = 0;
  int cpus = 1;
};

// GPUs visible to this process (CUDA_VISIBLE_DEVICES, else /dev/nvidiaN) and usable CPUs
// (the affinity mask).
DeviceCounts detectDevices(const env::EnvMap& env);

struct LaunchPlan {
  int nnodes = 1;
  int nodeRank = 0;
  int nprocPerNode = 1;
  std::string masterAddr = "127.0.0.1";
  int masterPort = 29500;  // 0 with standalone until a free port is chosen
  int maxRestarts = 0;
  bool standalone = false;
  // "flags" when no environment source was found but flags were given, else
  // env::sourceName() of the source ("default", "pytorchjob", "trainer-v2", "openmpi", "pmi").
  std::string source = "default";
  // Field name -> where it came from ("--nnodes", "PET_NNODES", "WORLD_SIZE", "default").
  std::map<std::string, std::string> origins;

  int worldSize() const { return nnodes * nprocPerNode; }
  int globalRank(int localRank) const { return nodeRank * nprocPerNode + localRank; }
};

// See Note [Node-level resolution]. Throws env::EnvError or LaunchError.
LaunchPlan resolveLaunchPlan(const LaunchFlags& flags, const env::EnvMap& env,
                             const DeviceCounts& devices);

// What a worker is told, on top of the launcher's own environment.
struct WorkerEnvOptions {
  int restartCount = 0;
  int ompNumThreads = 0;           // set OMP_NUM_THREADS when > 0
  std::string backend;             // DDPRUN_BACKEND when not empty
  int rendezvousTimeoutSeconds = 0;  // DDPRUN_RDZV_TIMEOUT when > 0
};

// torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK,
// GROUP_WORLD_SIZE, ROLE_*, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_RESTART_COUNT,
// TORCHELASTIC_MAX_RESTARTS) plus the options above. The one place a worker's environment
// is built.
std::map<std::string, std::string> workerEnvironment(const LaunchPlan& plan, int localRank,
                                                     const WorkerEnvOptions& options);

// The --dry-run output: one JSON object with the plan, the program and every worker's
// variables (see README, "Launcher").
std::string describePlanJson(const LaunchPlan& plan, const std::vector<std::string>& program,
                             const WorkerEnvOptions& options);

}  // namespace ddp::launcher
