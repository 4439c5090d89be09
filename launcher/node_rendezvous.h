// How the nodes of a job find each other: the static backend (every node is told its rank
// and the master's address) or the c10d backend (the nodes meet at an endpoint, a round of
// the rendezvous gives each its rank; Note [The c10d rendezvous protocol] in
// launcher/c10d/c10d_rendezvous.h).
//
// Note [The c10d rendezvous is a module]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// The c10d backend needs c10d's TCPStore, so LibTorch. ddprun itself does not link it: its
// start-up is part of launch-to-first-step, and loading libtorch_cpu costs far more than the
// launcher's own start (measured in benchmarks/results/launch_torch_load.txt). The backend
// lives in libddprun_rdzv_c10d.so, which ddprun dlopens only for --rdzv-backend c10d, from
// its own directory or ../lib beside it. The interface below is plain C++; the module's
// single C entry point (kC10dRendezvousEntryPoint) returns an implementation of it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace ddp::launcher {

// torchrun's --rdzv-id default (also the "<run id>" of the run directory under --log-dir).
inline constexpr const char* kDefaultRunId = "none";

// torchrun's default port for a c10d endpoint given without one.
constexpr int kDefaultRendezvousPort = 29400;

// --rdzv-backend c10d and its --rdzv-conf, as parsed (see parseRendezvousConf for the keys).
struct RendezvousConfig {
  std::string endpointHost;
  int endpointPort = kDefaultRendezvousPort;
  std::string runId = kDefaultRunId;
  int minNodes = 1;
  int maxNodes = 1;
  int localWorkers = 1;   // this node's nproc-per-node; WORLD_SIZE is the sum over the round
  std::string localAddr;  // empty: the local address of a socket connected to the endpoint
  // torchrun's --rdzv-conf keys and defaults:
  std::chrono::milliseconds joinTimeout{600000};  // a node waits this long for a round with it in
  std::chrono::milliseconds lastCallTimeout{30000};  // once MIN nodes joined, the wait for more
  std::chrono::milliseconds closeTimeout{30000};     // the host keeps the store up for the others
  std::chrono::milliseconds readTimeout{60000};      // one store operation
  std::optional<bool> isHost;                        // unset: host when the endpoint is this host's
  // A node's heartbeat (a counter in the store) every keepAliveInterval; a member whose
  // counter has not moved for keepAliveInterval x keepAliveMaxAttempt is dead. torchrun's
  // keys; smaller defaults than its 5 s x 3 because a beat is one store add.
  std::chrono::milliseconds keepAliveInterval{1000};
  int keepAliveMaxAttempt = 5;
  // Polled wherever the backend waits (the store's connect, a round's forming, the host's
  // close wait): a signal number ends the wait (RendezvousFailed; finish() just returns),
  // 0 lets it go on. Unset: never interrupted. ddprun's answers SIGTERM/SIGINT this way,
  // which it has blocked for its signalfd (Note [Worker processes]).
  std::function<int()> pendingStopSignal;

  std::string endpoint() const { return endpointHost + ":" + std::to_string(endpointPort); }
};

// Parses --rdzv-conf "k=v,k=v" into `config`. Known keys: join_timeout, last_call_timeout,
// close_timeout, read_timeout (seconds), is_host (true/false/1/0), keep_alive_interval
// (seconds, fractions allowed), keep_alive_max_attempt. Keys torchrun knows that have no meaning
// here (timeout, heartbeat_timeout, store_type, cas_backoff_max_seconds, use_agent_store) are
// returned as warnings; any other key is refused (a typo would silently keep a default).
// Throws LaunchError naming `origin` ("--rdzv-conf" or "PET_RDZV_CONF").
std::vector<std::string> parseRendezvousConf(const std::string& text, const std::string& origin,
                                             RendezvousConfig& config);

// "host:port" or "host" (port 29400); "[v6]:port". Throws LaunchError naming `origin`.
void parseRendezvousEndpoint(const std::string& text, const std::string& origin,
                             RendezvousConfig& config);

// One closed round: this node's place in it.
struct RendezvousRound {
  int round = 0;
  int nodeRank = 0;
  int nnodes = 1;
  int firstGlobalRank = 0;  // sum of the local workers of the nodes ranked before this one
  int worldSize = 1;        // sum of every member's local workers
  std::string masterAddr;   // node rank 0's address and a free port it chose
  int masterPort = 0;
  std::vector<std::string> members;  // node ids in node-rank order
};

// The rendezvous failed for good: the join timeout passed, the job was closed by another
// node, or the store (the host node) is gone. The message says which and what to do.
class RendezvousFailed : public TransientError {
 public:
  using TransientError::TransientError;
};

class NodeRendezvous {
 public:
  virtual ~NodeRendezvous() = default;
  // This node's id in the store ("node3"), stable for the life of the launcher.
  virtual std::string nodeId() const = 0;
  // Joins the next round open to this node and returns once it closed with this node in
  // it. Throws RendezvousFailed.
  virtual RendezvousRound nextRound() = 0;
  // Asked every monitor interval while the workers run; never throws. Non-empty: why the
  // group must re-form now (a node waits to join, a member's heartbeat stopped, the job was
  // closed, the store is unreachable).
  virtual std::string membershipChange() = 0;
  // This node is done: its workers succeeded, or it gives up (no restarts left, a permanent
  // error). Closes the job for the others; on the host, waits up to closeTimeout for the
  // round's other members to finish before the store goes away.
  virtual void finish(bool succeeded, const std::string& reason) = 0;
};

// The symbol libddprun_rdzv_c10d.so exports:
//   extern "C" ddp::launcher::NodeRendezvous* ddprunCreateC10dRendezvous(
//       const ddp::launcher::RendezvousConfig& config, std::string& error);
// nullptr with `error` set when it fails.
inline constexpr const char* kC10dRendezvousEntryPoint = "ddprunCreateC10dRendezvous";
inline constexpr const char* kC10dRendezvousModule = "libddprun_rdzv_c10d.so";
using CreateC10dRendezvousFn = NodeRendezvous* (*)(const RendezvousConfig&, std::string&);

// dlopens the module (Note [The c10d rendezvous is a module]) and creates the backend, which
// connects to (or hosts) the store. Throws RendezvousFailed.
std::unique_ptr<NodeRendezvous> loadC10dRendezvous(const RendezvousConfig& config);

}  // namespace ddp::launcher
