// The names of the environment variables ddprun reads and writes, in one place: the
// launcher writes the worker contract, the runtime reads it, and neither spells a name
// twice. What each means and who sets it: Note [Environment precedence] in cluster_env.h
// and ../shared/k8s-env-contract.md.
#pragma once

namespace ddp::env::var {

// torchrun's worker contract: ddprun (and torchrun) set these for every worker.
inline constexpr const char* kRank = "RANK";
inline constexpr const char* kWorldSize = "WORLD_SIZE";
inline constexpr const char* kLocalRank = "LOCAL_RANK";
inline constexpr const char* kLocalWorldSize = "LOCAL_WORLD_SIZE";
inline constexpr const char* kGroupRank = "GROUP_RANK";
inline constexpr const char* kGroupWorldSize = "GROUP_WORLD_SIZE";
inline constexpr const char* kRoleName = "ROLE_NAME";
inline constexpr const char* kRoleRank = "ROLE_RANK";
inline constexpr const char* kRoleWorldSize = "ROLE_WORLD_SIZE";
inline constexpr const char* kMasterAddr = "MASTER_ADDR";
inline constexpr const char* kMasterPort = "MASTER_PORT";
inline constexpr const char* kTorchelasticRestartCount = "TORCHELASTIC_RESTART_COUNT";
inline constexpr const char* kTorchelasticMaxRestarts = "TORCHELASTIC_MAX_RESTARTS";
inline constexpr const char* kTorchelasticRunId = "TORCHELASTIC_RUN_ID";
inline constexpr const char* kOmpNumThreads = "OMP_NUM_THREADS";
// <log dir>/attempt_<k>/<local_rank>/error.json: where a Python worker's @record writes.
inline constexpr const char* kTorchelasticErrorFile = "TORCHELASTIC_ERROR_FILE";
// Python workers write print() at once, not at exit (Note [Live output], output_router.h).
inline constexpr const char* kPythonUnbuffered = "PYTHONUNBUFFERED";

// ddprun's own additions to the worker contract (launcher flag -> worker setting).
inline constexpr const char* kRestartCount = "DDPRUN_RESTART_COUNT";            // attempt number
inline constexpr const char* kBackend = "DDPRUN_BACKEND";                       // --backend
inline constexpr const char* kRendezvousTimeout = "DDPRUN_RDZV_TIMEOUT";        // --rdzv-timeout, s
inline constexpr const char* kCollectiveTimeout = "DDPRUN_COLLECTIVE_TIMEOUT";  // seconds
inline constexpr const char* kHangTimeout = "DDPRUN_HANG_TIMEOUT";              // --hang-timeout, s
inline constexpr const char* kWatchdog = "DDPRUN_WATCHDOG";                     // 0: no watchdog
// Test-only: make one rank misbehave (Note [Injected faults] in runtime/train/trainer.cpp).
inline constexpr const char* kTestFault = "DDPRUN_TEST_FAULT";
// Where a worker's watchdog also writes its heartbeat, for the launcher's report.
inline constexpr const char* kHeartbeatFile = "DDPRUN_HEARTBEAT_FILE";
// Where a worker writes its training metrics for the node's /metrics (Note [Training
// metrics] in runtime/metrics/training_metrics.h).
inline constexpr const char* kMetricsFile = "DDPRUN_METRICS_FILE";
inline constexpr const char* kMetricsPort = "DDPRUN_METRICS_PORT";  // --metrics-port, 0 = off
inline constexpr const char* kMetricsHost = "DDPRUN_METRICS_HOST";  // --metrics-host
// 1: draw the progress bar though stderr is not a terminal (ddprun's is); 0: never.
inline constexpr const char* kProgress = "DDPRUN_PROGRESS";
inline constexpr const char* kLogLevel = "DDPRUN_LOG_LEVEL";            // --log-level
inline constexpr const char* kErrorFile = "DDPRUN_ERROR_FILE";          // --error-file
inline constexpr const char* kHostAllocator = "DDPRUN_HOST_ALLOCATOR";  // system | keep

// Kubeflow's torchrun arguments as variables (PyTorchJob with nprocPerNode/elastic,
// Trainer v2): torchrun reads every flag's default from PET_<FLAG>.
inline constexpr const char* kPetNnodes = "PET_NNODES";
inline constexpr const char* kPetNodeRank = "PET_NODE_RANK";
inline constexpr const char* kPetNprocPerNode = "PET_NPROC_PER_NODE";
inline constexpr const char* kPetMasterAddr = "PET_MASTER_ADDR";
inline constexpr const char* kPetMasterPort = "PET_MASTER_PORT";
inline constexpr const char* kPetMaxRestarts = "PET_MAX_RESTARTS";
inline constexpr const char* kPetStandalone = "PET_STANDALONE";
inline constexpr const char* kPetLogDir = "PET_LOG_DIR";
inline constexpr const char* kPetRedirects = "PET_REDIRECTS";
inline constexpr const char* kPetRdzvBackend = "PET_RDZV_BACKEND";
inline constexpr const char* kPetRdzvEndpoint = "PET_RDZV_ENDPOINT";
inline constexpr const char* kPetRdzvId = "PET_RDZV_ID";
inline constexpr const char* kPetRdzvConf = "PET_RDZV_CONF";
inline constexpr const char* kPetLocalAddr = "PET_LOCAL_ADDR";
inline constexpr const char* kPetMonitorInterval = "PET_MONITOR_INTERVAL";
inline constexpr const char* kPetTee = "PET_TEE";
inline constexpr const char* kPetLocalRanksFilter = "PET_LOCAL_RANKS_FILTER";
inline constexpr const char* kPetLogLinePrefixTemplate = "PET_LOG_LINE_PREFIX_TEMPLATE";
// torchrun reads it when --log-line-prefix-template (and its PET_ variable) is empty.
inline constexpr const char* kTorchelasticLogLinePrefixTemplate =
    "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE";

// MPI launchers: Open MPI, and MPICH / Intel MPI (Hydra).
inline constexpr const char* kOmpiRank = "OMPI_COMM_WORLD_RANK";
inline constexpr const char* kOmpiSize = "OMPI_COMM_WORLD_SIZE";
inline constexpr const char* kOmpiLocalRank = "OMPI_COMM_WORLD_LOCAL_RANK";
inline constexpr const char* kOmpiLocalSize = "OMPI_COMM_WORLD_LOCAL_SIZE";
inline constexpr const char* kPmiRank = "PMI_RANK";
inline constexpr const char* kPmiId = "PMI_ID";  // Hydra's PMI_PORT mode, instead of PMI_RANK
inline constexpr const char* kPmiSize = "PMI_SIZE";
inline constexpr const char* kMpiLocalRankId = "MPI_LOCALRANKID";
inline constexpr const char* kMpiLocalNranks = "MPI_LOCALNRANKS";

// Devices the launcher counts for --nproc-per-node auto/gpu.
inline constexpr const char* kCudaVisibleDevices = "CUDA_VISIBLE_DEVICES";

}  // namespace ddp::env::var
