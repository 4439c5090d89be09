#include "runtime/rendezvous/rendezvous.h"

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "runtime/error.h"
#include "runtime/log/logging.h"

namespace ddp::rendezvous {
namespace {

TcpStoreOptions storeOptionsFor(const env::ClusterEnv& env, const ConnectOptions& options) {
  TcpStoreOptions storeOptions;
  storeOptions.rank = env.rank;
  storeOptions.worldSize = env.worldSize;
  storeOptions.timeout = options.timeout;
  return storeOptions;
}

// The MPI bootstrap (Note at the top of mpi_bootstrap.h): rank 0 hosts the store on a free
// port (or MASTER_PORT) and broadcasts host:port; the others connect to it.
void connectThroughMpi(const env::ClusterEnv& env, const ConnectOptions& options, Rendezvous& out) {
  auto& mpi = *out.mpi;
  if (mpi.rank() != env.rank || mpi.size() != env.worldSize) {
    throw ConfigError(fmt::format(
        "MPI says rank {} of {}, the environment says rank {} of {} (source {}). ---> HINT: "
        "this ddprun's MPI library must be the one mpirun belongs to.",
        mpi.rank(), mpi.size(), env.rank, env.worldSize, env::sourceName(env.source)));
  }
  auto storeOptions = storeOptionsFor(env, options);
  storeOptions.masterPort = env.masterPortFromEnvironment ? env.masterPort : std::uint16_t{0};
  std::string endpoint;
  if (env.rank == 0) {
    // The address the others are told is the one the store listens on (Note [Where the
    // store listens] in tcp_store.h).
    storeOptions.masterAddr = thisHostAddress();
    out.store = connectTcpStore(storeOptions);
    endpoint =
        fmt::format("{}:{}", storeOptions.masterAddr,
                    c10::static_intrusive_pointer_cast<c10d::TCPStore>(out.store)->getPort());
  }
  endpoint = mpi.broadcastEndpoint(endpoint);
  const auto colon = endpoint.rfind(':');
  out.master = {endpoint.substr(0, colon),
                static_cast<std::uint16_t>(std::stoi(endpoint.substr(colon + 1))), "mpi-bootstrap"};
  log::info("rendezvous", "event=mpi_bootstrap master={}", endpoint);
  if (env.rank != 0) {
    storeOptions.masterAddr = out.master.host;
    storeOptions.masterPort = out.master.port;
    out.store = connectTcpStore(storeOptions);
  }
}

}  // namespace

Rendezvous connect(const env::ClusterEnv& env, const ConnectOptions& options) {
  Rendezvous out;
  if (env.masterAddr.empty()) {
    // Under mpirun without MASTER_ADDR: rank 0 hosts first, then tells the others.
    out.mpi = std::make_shared<MpiSession>();
    try {
      connectThroughMpi(env, options, out);
    } catch (const std::exception& e) {
      // Ends every rank: a rank leaving through MPI_Finalize would wait for the others,
      // which may be waiting for it (rank 0's store), and mpirun would hang.
      log::error("rendezvous", "{} ---> aborting the MPI job (exit {})", e.what(), exitCodeFor(e));
      out.mpi->abort(exitCodeFor(e));
    }
    return out;
  }
  auto storeOptions = storeOptionsFor(env, options);
  storeOptions.masterAddr = env.masterAddr;
  // A lone process with nothing configured takes any free port: two single-process runs
  // on one machine must not collide on 29500.
  const bool anyPort = env.worldSize == 1 && !env.masterPortFromEnvironment;
  storeOptions.masterPort = anyPort ? std::uint16_t{0} : env.masterPort;
  auto store = connectTcpStore(storeOptions);
  out.master = {
      env.masterAddr,
      anyPort && env.rank == 0 ? static_cast<std::uint16_t>(store->getPort()) : env.masterPort,
      anyPort ? "free port" : "environment"};
  out.store = std::move(store);
  return out;
}

}  // namespace ddp::rendezvous
