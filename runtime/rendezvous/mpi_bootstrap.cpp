#include "runtime/rendezvous/mpi_bootstrap.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "runtime/config.h"
#include "runtime/rendezvous/tcp_store.h"
#if HAVE_MPI
#include <mpi.h>
#endif

namespace ddp::rendezvous {

bool mpiBootstrapAvailable() { return HAVE_MPI; }

#if HAVE_MPI
namespace {
// "host:port" of any host name fits; fixed so one MPI_Bcast suffices.
constexpr int kEndpointBytes = 512;
}  // namespace

MpiSession::MpiSession() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SINGLE, &provided) != MPI_SUCCESS) {
      throw RendezvousError(
          "MPI_Init_thread failed: cannot use MPI to find the master. "
          "---> HINT: set MASTER_ADDR and MASTER_PORT to skip the MPI "
          "bootstrap.");
    }
    initializedHere_ = true;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (initializedHere_ && !finalized) MPI_Finalize();
}

std::string MpiSession::broadcastEndpoint(const std::string& endpointOnRoot) {
  std::array<char, kEndpointBytes> buffer{};
  if (rank_ == 0) {
    if (endpointOnRoot.size() >= buffer.size()) {
      throw RendezvousError("master endpoint too long for the MPI bootstrap: " + endpointOnRoot);
    }
    std::memcpy(buffer.data(), endpointOnRoot.data(), endpointOnRoot.size());
  }
  if (MPI_Bcast(buffer.data(), kEndpointBytes, MPI_CHAR, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
    throw RendezvousError("MPI_Bcast of the master endpoint failed");
  }
  return std::string(buffer.data());
}

void MpiSession::abort(int exitCode) {
  MPI_Abort(MPI_COMM_WORLD, exitCode);
  std::_Exit(exitCode);  // MPI_Abort does not return; this keeps [[noreturn]] true if it did
}
#else
MpiSession::MpiSession() {
  throw RendezvousError(
      "this ddprun was built without MPI (DDPRUN_WITH_MPI=OFF), so under "
      "mpirun it cannot find the master by itself. ---> HINT: set "
      "MASTER_ADDR and MASTER_PORT.");
}
MpiSession::~MpiSession() = default;
std::string MpiSession::broadcastEndpoint(const std::string&) { return {}; }
void MpiSession::abort(int exitCode) { std::_Exit(exitCode); }
#endif

std::string thisHostAddress() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "127.0.0.1";
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  if (getaddrinfo(name, nullptr, &hints, &addresses) != 0) return name;
  std::string chosen = name;
  for (auto* a = addresses; a; a = a->ai_next) {
    char text[INET_ADDRSTRLEN] = {};
    auto* in = reinterpret_cast<sockaddr_in*>(a->ai_addr);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    if (std::strncmp(text, "127.", 4) != 0) {
      chosen = text;
      break;
    }
  }
  freeaddrinfo(addresses);
  return chosen;
}

}  // namespace ddp::rendezvous
