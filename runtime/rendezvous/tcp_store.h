// Rendezvous through c10d's TCPStore: rank 0 hosts the store on master_addr:master_port,
// every rank (rank 0 included) is a client of it. The store is PyTorch's own, so a
// Python process using torch.distributed speaks the same protocol.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

#include <c10/util/intrusive_ptr.h>

#include "runtime/env/cluster_env.h"
#include "runtime/error.h"

namespace c10d {
class TCPStore;
}

namespace ddp::rendezvous {

// torchrun's and c10d's default port; the Kubeflow PyTorchJob default is 23456 and
// arrives through MASTER_PORT.
using env::kDefaultMasterPort;
constexpr std::chrono::seconds kDefaultRendezvousTimeout{300};
// Between two attempts to reach the master: starts small (pods usually come up within
// seconds of each other), doubles, and is capped so a late master is noticed quickly.
constexpr std::chrono::milliseconds kFirstRetryDelay{100};
constexpr std::chrono::milliseconds kMaxRetryDelay{2000};
// Ranks started together reach the master before it listens, as a rule: for this long the
// retries are logged at debug, after it at info (a master that is late, or not coming).
constexpr std::chrono::milliseconds kQuietWaitForMaster{2000};
// One connection attempt gives up after this long (a SYN to a host that drops packets).
constexpr std::chrono::milliseconds kConnectAttemptTimeout{1000};

// The master could not be reached (or could not host the store) in time. Retryable:
// the launcher/operator may start the group again.
class RendezvousError : public TransientError {
 public:
  using TransientError::TransientError;
};

struct TcpStoreOptions {
  std::string masterAddr = "127.0.0.1";
  // Port of the store. On rank 0, 0 asks the kernel for a free port (see getPort()).
  std::uint16_t masterPort = kDefaultMasterPort;
  int rank = 0;
  int worldSize = 1;
  // How long clients try to reach the master, and how long store operations wait.
  std::chrono::milliseconds timeout = kDefaultRendezvousTimeout;
  // A client calls this between two attempts to reach the master; what it throws ends the
  // wait (the launcher's answer to SIGTERM while it waits). Unset: nothing.
  std::function<void()> betweenAttempts;
};

// Note [Waiting for the master]: pods start in any order and a Kubernetes headless
// service name resolves only once its pod is Ready, so a non-zero rank may find the
// master's name unknown, or nothing listening, for a while. We probe (resolve + TCP
// connect) with backoff until options.timeout, logging each attempt with its cause,
// and only then let c10d's client connect. We probe ourselves because c10d's own
// connect loop overshoots its timeout (about 2x, measured) and names no cause.
//
// Note [Where the store listens]: c10d's store has no authentication (README, "Threat
// model"), and its server listens on every interface ("::", else 0.0.0.0). Rank 0 binds the
// socket itself instead and hands it over (TCPStoreOptions::masterListenFd, which the libuv
// backend, c10d's default, honours):
//   - masterAddr resolves to an address of this host (the bind succeeds): that address
//     only. 127.0.0.1 for `ddprun --standalone` and single-node runs; the pod's IP when a
//     PyTorchJob's MASTER_ADDR (its headless service) resolves to it on the master pod;
//     thisHostAddress() under the MPI bootstrap.
//   - it does not resolve (the master's own DNS name before its pod is Ready) or is not
//     this host's (a Service's cluster IP, a NAT address; the bind fails EADDRNOTAVAIL):
//     every interface, as c10d does, with an info line saying why.
// Rank 0's own client connects to the address bound, or over loopback to the wildcard, so
// it never depends on its own DNS name.
//
// Throws RendezvousError naming address, port, elapsed time, the last cause and the likely
// causes.
c10::intrusive_ptr<c10d::TCPStore> connectTcpStore(const TcpStoreOptions& options);

// Whether `host` resolves to an address of this machine: a socket binds to it (Note [Where
// the store listens]). A name that does not resolve is not. ddprun's c10d rendezvous hosts
// the store on the node whose address is the endpoint's.
bool isThisHostsAddress(const std::string& host);

// One probe: "" when a TCP connection to host:port succeeded within `timeout`, else
// why not ("host name does not resolve: ...", "connection refused ...", "timed out").
std::string probeTcp(const std::string& host, std::uint16_t port,
                     std::chrono::milliseconds timeout);

}  // namespace ddp::rendezvous
