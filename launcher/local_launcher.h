// Starting, watching and tearing down the worker processes of one node.
//
// State machine of a run: all workers start; the launcher blocks in waitpid() and so
// notices the first exit at once. All workers exit 0 -> the run succeeded. One worker
// fails (non-zero exit or signal) -> the others get SIGTERM, then SIGKILL after the
// grace period. SIGTERM/SIGINT to the launcher are forwarded the same way. Workers run
// in their own process groups (the signal reaches their children too) and die with the
// launcher (PR_SET_PDEATHSIG), so no orphan survives either side.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace ddp::launcher {

struct WorkerSpec {
  std::vector<std::string> argv;  // argv[0]: program, searched in PATH if it has no '/'
  int nprocPerNode = 1;
  int nnodes = 1;
  int nodeRank = 0;
  std::string masterAddr = "127.0.0.1";
  int masterPort = 29500;
  int restartCount = 0;
  std::chrono::milliseconds gracePeriod{10000};
  // Set in each worker's OMP_NUM_THREADS when > 0 (main() fills it when the variable is
  // unset: cores / workers, so N workers do not each start one thread per core).
  int ompNumThreads = 0;
};

// The environment a worker gets on top of the launcher's (torchrun's variable names).
std::map<std::string, std::string> workerEnvironment(const WorkerSpec& spec, int localRank);

struct RunResult {
  int exitCode = 0;          // what the launcher should exit with
  int failedRank = -1;       // global rank of the first failed worker, -1 if none
  int failedExitCode = 0;    // its exit code, or 0 if it was killed by a signal
  int failedSignal = 0;      // the signal that killed it
  int receivedSignal = 0;    // SIGTERM/SIGINT the launcher received, 0 if none
};

// Runs one group of workers to the end (see the state machine above).
RunResult runWorkerGroup(const WorkerSpec& spec);

}  // namespace ddp::launcher
