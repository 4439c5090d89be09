// What ddprun starts on this node, resolved from its flags and the node's environment.
//
// The node's place comes from env::resolveNodeEnv() (Note [Environment precedence], the
// node column, in runtime/env/cluster_env.h); the flags (launch_flags.h) win over it, as in
// torchrun. On top of that the launcher decides what only it can:
//   nprocPerNode "auto" is one worker per visible GPU, else 1; "gpu" the GPU count (an
//   error without GPUs); "cpu" the CPU count. Default 1.
//   --standalone: one node on 127.0.0.1 with a free port.
//   master: 127.0.0.1:29500 on one node; more than one node without an address is an error.
// Errors are env::EnvError (a variable) or LaunchError (a flag); both are PermanentError.
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "launcher/node_rendezvous.h"
#include "launcher/worker_program.h"
#include "runtime/env/cluster_env.h"
#include "runtime/env/node_env.h"

namespace ddp::launcher {

// A flag that is malformed or contradicts another: exit kExitUsage.
class LaunchError : public PermanentError {
 public:
  using PermanentError::PermanentError;
};

// The node's place as the command line gives it (launch_flags.h reads it); unset fields
// come from the environment.
struct LaunchFlags {
  std::optional<std::string> nprocPerNode;  // "N", auto, cpu, gpu
  std::optional<int> nnodes;
  std::optional<int> maxNodes;               // --nnodes MIN:MAX with MIN < MAX: nnodes is MIN
  std::string rendezvousBackend = "static";  // --rdzv-backend: static or c10d
  std::string runId = kDefaultRunId;         // --rdzv-id
  std::optional<int> nodeRank;
  std::optional<std::string> masterAddr;
  std::optional<int> masterPort;
  std::optional<int> maxRestarts;
  std::string maxRestartsOrigin = "--max-restarts";  // or PET_MAX_RESTARTS
  bool standalone = false;
};

// What the machine has, passed in so that tests choose it.
struct DeviceCounts {
  int gpus = 0;
  int cpus = 1;
  std::string gpuSource;   // what counted the GPUs: "the CUDA driver", "CUDA_VISIBLE_DEVICES", ...
  std::string gpuWarning;  // set when what was counted and what can be used disagree
};

// Note [Counting GPUs]
// ~~~~~~~~~~~~~~~~~~~~
// The NVIDIA container toolkit keeps the host's device numbers: a pod given the node's GPUs
// 4 to 7 has /dev/nvidia4..7 and no /dev/nvidia0, so counting /dev/nvidiaN up to the first
// gap (as ddprun did) found none, and `--nproc-per-node auto` started one worker on an
// 8-GPU pod without a word. What counts is what the workers can use:
//   1. the CUDA driver's own count (libcuda.so.1, opened with dlopen: the launcher links no
//      CUDA; it honours CUDA_VISIBLE_DEVICES as the workers' runtime will), asked only
//      when --nproc-per-node is auto or gpu, since initializing it takes a moment;
//   2. without a driver: the entries of CUDA_VISIBLE_DEVICES, else of NVIDIA_VISIBLE_DEVICES
//      (the device plugin's list), else every /dev/nvidiaN whatever its N.
// A pod that looks like a GPU pod (/dev/nvidiactl, or NVIDIA_VISIBLE_DEVICES naming
// devices) where no GPU can be used gets a warning that says why, never a silent 0.

// The CUDA driver's answer: loaded (libcuda.so.1 found), its cuInit/cuDeviceGetCount
// status (0: success) and count, the error's name otherwise.
struct CudaDriverCount {
  bool loaded = false;
  int status = 0;
  int count = 0;
  std::string error;
};
CudaDriverCount countGpusWithCudaDriver();

// Where detectDevices looks; tests choose each part.
struct GpuProbe {
  bool askDriver = false;  // see the Note: only for auto and gpu
  std::string devDir = "/dev";
  CudaDriverCount (*driverCount)() = countGpusWithCudaDriver;
};

// GPUs this process can use (Note [Counting GPUs]) and usable CPUs (the affinity mask).
DeviceCounts detectDevices(const env::EnvMap& env, const GpuProbe& probe = {});

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

  // Elastic (--nnodes MIN:MAX): nnodes is MIN until a round says otherwise.
  int maxNodes = 1;
  // "static", or "c10d": nodeRank, nnodes and the master then come from each round of the
  // rendezvous (launcher/node_rendezvous.h), and so do the two below.
  std::string rendezvousBackend = "static";
  std::string runId = kDefaultRunId;  // --rdzv-id: TORCHELASTIC_RUN_ID
  std::string rendezvousEndpoint;     // c10d: host:port
  // A round's first global rank of this node and the round's world size: nodes may run
  // different numbers of workers. Unset (-1, 0): nodeRank x nprocPerNode, nnodes x nprocPerNode.
  int firstGlobalRank = -1;
  int totalWorkers = 0;

  int worldSize() const { return totalWorkers > 0 ? totalWorkers : nnodes * nprocPerNode; }
  int globalRank(int localRank) const {
    return (firstGlobalRank >= 0 ? firstGlobalRank : nodeRank * nprocPerNode) + localRank;
  }
};

// The flags over the node's environment (see the top of this file). Throws env::EnvError
// or LaunchError.
LaunchPlan resolveLaunchPlan(const LaunchFlags& flags, const env::NodeEnv& node,
                             const DeviceCounts& devices);
// resolveLaunchPlan(flags, env::resolveNodeEnv(env), devices).
LaunchPlan resolveLaunchPlan(const LaunchFlags& flags, const env::EnvMap& env,
                             const DeviceCounts& devices);

// <attemptLogDir>/<localRank>/metrics.json: where a worker writes its metrics
// (DDPRUN_METRICS_FILE) and the launcher reads them.
std::string workerMetricsFile(const std::string& attemptLogDir, int localRank);

// What a worker is told, on top of the launcher's own environment.
struct WorkerEnvOptions {
  int restartCount = 0;
  int ompNumThreads = 0;             // set OMP_NUM_THREADS when > 0
  std::string backend;               // DDPRUN_BACKEND when not empty
  int rendezvousTimeoutSeconds = 0;  // DDPRUN_RDZV_TIMEOUT when > 0
  int hangTimeoutSeconds = 0;        // DDPRUN_HANG_TIMEOUT when > 0
  // DDPRUN_METRICS_FILE=<attemptLogDir>/<local rank>/metrics.json (Note [Training metrics]
  // in runtime/metrics/training_metrics.h): the launcher serves /metrics from them.
  bool metricsFiles = false;
  // DDPRUN_PROGRESS: 1 draws rank 0's progress bar through the launcher's terminal, 0 none,
  // unset the worker's own choice (a terminal of its own only).
  std::optional<bool> progressBar;
  std::string role = "default";  // ROLE_NAME (--role)
  // --virtual-local-rank: LOCAL_RANK=0, and CUDA_VISIBLE_DEVICES is the worker's own entry of
  // `visibleDevices` (the launcher's CUDA_VISIBLE_DEVICES), else its local rank.
  bool virtualLocalRank = false;
  std::optional<std::string> visibleDevices;
  // TORCHELASTIC_ERROR_FILE=<attemptLogDir>/<local rank>/error.json when not empty, as
  // torchrun: a Python worker's @record writes its exception there.
  std::string attemptLogDir;
  // PYTHONUNBUFFERED=1 (false when the launcher's own environment sets it: the user's value
  // is inherited): print() reaches the console at once, not when the buffer fills.
  bool pythonUnbuffered = true;
};

// Throws LaunchError when --virtual-local-rank cannot give every local rank a device of
// options.visibleDevices (called before any worker starts).
void checkVirtualLocalRanks(const LaunchPlan& plan, const WorkerEnvOptions& options);

// torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK,
// GROUP_WORLD_SIZE, ROLE_*, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_RESTART_COUNT,
// TORCHELASTIC_MAX_RESTARTS, TORCHELASTIC_ERROR_FILE) plus the options above. The one place a
// worker's environment is built.
std::map<std::string, std::string> workerEnvironment(const LaunchPlan& plan, int localRank,
                                                     const WorkerEnvOptions& options);

// The --dry-run output: one JSON object with the plan, the program (what each worker
// executes, its kind and why) and every worker's variables (see README, "Launcher").
std::string describePlanJson(const LaunchPlan& plan, const WorkerProgram& program,
                             const WorkerEnvOptions& options);

}  // namespace ddp::launcher
