// ddp::init(): from whatever the cluster injected to a working process group.
//
//   environment --env::resolveClusterEnv--> ClusterEnv (rank, world size, master, source)
//   host allocator: keep freed tensor memory (memory/host_allocator.h)
//   backend "auto" -> the launcher's --backend, else nccl when CUDA is available, else gloo
//   rendezvous::connect: rank 0 hosts c10d's TCPStore; under mpirun without MASTER_ADDR
//               the endpoint travels by MPI_Bcast (rendezvous/rendezvous.h)
//   process group on the store (comm/process_group.h)
//
// Errors follow Note [Two error families] (runtime/error.h): env::EnvError and ConfigError
// are permanent (exit 2); rendezvous::RendezvousError (the master unreachable, a rank that
// never joins the process group: Note [Waiting for the other ranks] in comm/process_group.h)
// and c10::DistError (a collective timed out, a peer was lost) are transient (exit 200).
// exitCodeFor() decides.
//
// Self-contained: this header is enough to call dist.group->allreduce(...).
#pragma once

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>

#include <c10/core/Device.h>
#include <c10/util/intrusive_ptr.h>
// The complete types, so that a user's `dist.group->allreduce(...)` and `dist.store->set(...)`
// compile with this header alone (an installed ddprun has no precompiled header to lean on).
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "runtime/comm/process_group.h"
#include "runtime/env/cluster_env.h"
#include "runtime/error.h"
#include "runtime/exit_codes.h"
#include "runtime/health/liveness.h"
#include "runtime/health/watchdog.h"
#include "runtime/rendezvous/rendezvous.h"

namespace ddp::metrics {
class Exporter;
class NodeMonitor;
}  // namespace ddp::metrics

namespace ddp {

struct InitOptions {
  // "gloo", "nccl" or "auto". "auto" takes DDPRUN_BACKEND (ddprun --backend) when set,
  // else nccl when CUDA is available, else gloo.
  std::string backend = "auto";
  // Where this rank's tensors live: "cpu", "cuda" or "auto" (Note [Device choice]).
  std::string device = "auto";
  // How long non-zero ranks wait for the master. Unset: DDPRUN_RDZV_TIMEOUT (seconds),
  // else rendezvous::kDefaultRendezvousTimeout.
  std::optional<std::chrono::milliseconds> rendezvousTimeout;
  // How long a collective may take before it fails. Unset: DDPRUN_COLLECTIVE_TIMEOUT
  // (seconds), else comm::kDefaultCollectiveTimeout.
  std::optional<std::chrono::milliseconds> collectiveTimeout;
  // How long the whole job may go without progress before the watchdog ends it (Note
  // [Hang bound] in runtime/health/watchdog.h). Unset: DDPRUN_HANG_TIMEOUT (seconds), else
  // calibrated from step times.
  std::optional<std::chrono::milliseconds> hangTimeout;
  // The watchdog (Note [Watchdog]): heartbeats, death/hang/desync verdicts. Off also with
  // DDPRUN_WATCHDOG=0.
  bool watchdog = true;
  // The environment to resolve; unset: this process's.
  std::optional<env::EnvMap> environment;
};

// Note [Leaving a failed group]: a Distributed destroyed while an exception unwinds leaves
// its process group to the process's exit instead of destroying it. ProcessGroupGloo's
// destructor joins its worker threads, and after a lost peer one of them may be blocked in
// a receive from a rank that is itself stuck: the survivor then hung in the unwinding
// until the collective timeout (30 min by default) instead of exiting with its error.
// Gloo has no abort for a whole group (NCCL has; with it too, exiting is what is left).
struct Distributed {
  // Defined where the metrics types are complete (distributed.cpp).
  Distributed();
  Distributed(Distributed&&) noexcept;
  Distributed& operator=(Distributed&&) noexcept;
  ~Distributed();

  env::ClusterEnv env;          // as the environment gave it, never changed
  rendezvous::Endpoint master;  // where rank 0's store turned out to be
  comm::Backend backend = comm::Backend::kGloo;
  c10::Device device = c10::Device(c10::kCPU);  // where this rank's tensors live
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::shared_ptr<rendezvous::MpiSession> mpi;  // set when MPI found the master
  // Note [Training metrics]: this rank's metrics file, and under mpirun without ddprun the
  // node's /metrics endpoint on its local rank 0 (Note [Metrics endpoint]).
  std::unique_ptr<metrics::Exporter> metricsExporter;
  std::unique_ptr<metrics::NodeMonitor> nodeMonitor;
  // Note [Watchdog]. Declared last: destroyed first, while the group still stands.
  std::unique_ptr<health::Watchdog> watchdog;

  int rank() const { return env.rank; }
  int worldSize() const { return env.worldSize; }
};

// Logging: init() tags log lines with the rank but keeps the level the program set
// (Note [Log level precedence] in runtime/log/logging.h).
Distributed init(const InitOptions& options = {});

// "gloo", "nccl", "auto" -> the backend to use here; ConfigError for anything else, or
// for nccl where CUDA is unavailable or not built in.
comm::Backend resolveBackend(const std::string& name);

// Note [Device choice]
// ~~~~~~~~~~~~~~~~~~~~
// "auto" is what the backend implies: CUDA device <local rank> under NCCL, the CPU under
// Gloo. "cuda" under Gloo puts the tensors on device <local rank> modulo the visible
// devices, so that ranks may share one GPU (Gloo moves CUDA tensors through the host);
// under NCCL it is "auto". "cpu" under NCCL is a ConfigError (NCCL reduces CUDA tensors
// only); init() turns backend "auto" into Gloo when the device is "cpu". "cuda" where no
// CUDA device can be used, or in a CUDA-off build, is a ConfigError saying why.
c10::Device resolveDevice(const std::string& name, comm::Backend backend, int localRank);

// The message of an error for a person: c10 errors without their C++ backtrace ("Exception
// raised from ... frame #0 ..."), unless the log level is debug (--log-level debug,
// DDPRUN_LOG_LEVEL=debug), which keeps it. Everything that shows an error to a user (a
// program's last line, a log line, the run journal) goes through here.
std::string errorMessage(const std::exception& error);

// Whether `error` says a peer went away rather than what went wrong here: a connection
// closed or reset by a peer, a collective that timed out waiting for one (c10's
// DistNetworkError, Gloo's IoException). Such a rank's failure is a consequence of
// another's (Note [The error file]).
bool isPeerLoss(const std::exception& error);

// Note [The error file]
// ~~~~~~~~~~~~~~~~~~~~~
// A failing program writes its error where TORCHELASTIC_ERROR_FILE says (ddprun and torchrun
// set it for each worker), in torchelastic's format, which ddprun and torchrun both read:
//   {"message": {"message": "<type>: <what>", "extraInfo": {"py_callstack": "",
//    "timestamp": "<unix seconds>", "ddprun_time_ns": "<unix ns>", "ddprun_peer_loss": b}}}
// The launcher names as the culprit the failure that came first and is not a peer loss:
// when rank 0 cannot write its checkpoint, rank 1's "Connection closed by peer" that
// follows is listed as a consequence, whichever process the launcher reaped first.
// Does nothing without the variable; never throws (it runs on the way out).
void writeErrorFile(const std::exception& error);

}  // namespace ddp
