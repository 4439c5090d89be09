// Under mpirun (MPIJob) there is no MASTER_ADDR: the launcher pod started every rank
// through MPI, and MPI itself is the channel to agree on where rank 0's store lives.
// Rank 0 hosts the TCPStore on a free port first, then broadcasts "host:port" with
// MPI_Bcast; the others connect to it. MPI is initialized here only when nobody did
// before, and finalized by the session that initialized it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace ddp::rendezvous {

// Whether this build has the MPI bootstrap (DDPRUN_WITH_MPI).
bool mpiBootstrapAvailable();

class MpiSession {
 public:
  // Initializes MPI (MPI_THREAD_MULTIPLE not needed: only this thread calls MPI) unless
  // it already is. Throws RendezvousError when MPI cannot start.
  MpiSession();
  ~MpiSession();  // MPI_Finalize, if this session initialized MPI
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  // Collective over MPI_COMM_WORLD: rank 0 passes the endpoint it hosts, every rank
  // returns it.
  std::string broadcastEndpoint(const std::string& endpointOnRoot);

  // MPI_Abort(MPI_COMM_WORLD, exitCode): ends every rank, and mpirun exits with exitCode.
  // For an error after MPI started: MPI_Finalize would wait for ranks that are themselves
  // waiting for this one (e.g. rank 0's store waiting for a rank that cannot reach it).
  [[noreturn]] void abort(int exitCode);

 private:
  bool initializedHere_ = false;
  int rank_ = 0;
  int size_ = 1;
};

// The address other hosts reach this one by: the first non-loopback IPv4 address this
// host name resolves to (a pod's name resolves to its IP), else the host name itself.
std::string thisHostAddress();

}  // namespace ddp::rendezvous
