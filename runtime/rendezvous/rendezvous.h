// Rendezvous behind one verb: from a resolved ClusterEnv to a connected store.
//
//   master known (MASTER_ADDR, ...)  rank 0 hosts c10d's TCPStore on masterAddr:masterPort,
//                                    the others connect (tcp_store.h, Note [Waiting for the
//                                    master]).
//   under mpirun, no master address  rank 0 hosts on a free port (or MASTER_PORT) and
//                                    broadcasts host:port over MPI (mpi_bootstrap.h).
//
// The ClusterEnv is only read: where the master turned out to be is the Rendezvous's
// `master`, so the environment a process was given stays what it was given.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <c10/util/intrusive_ptr.h>

#include "runtime/env/cluster_env.h"
#include "runtime/rendezvous/mpi_bootstrap.h"
#include "runtime/rendezvous/tcp_store.h"

namespace c10d {
class Store;
}

namespace ddp::rendezvous {

struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
  std::string origin;  // "environment", "free port" (a lone process), "mpi-bootstrap"
};

struct Rendezvous {
  c10::intrusive_ptr<c10d::Store> store;
  Endpoint master;                  // where rank 0's store listens
  std::shared_ptr<MpiSession> mpi;  // set when MPI found the master; keep it alive
};

struct ConnectOptions {
  // How long non-zero ranks wait for the master, and store operations for each other.
  std::chrono::milliseconds timeout = kDefaultRendezvousTimeout;
};

// Connects this process to rank 0's store. Throws RendezvousError (transient) when the
// master cannot be reached in time, ConfigError when MPI and the environment disagree.
// Under mpirun an error after MPI started aborts every rank with its exit code (a rank
// leaving alone would leave mpirun waiting for it).
Rendezvous connect(const env::ClusterEnv& env, const ConnectOptions& options);

}  // namespace ddp::rendezvous
