// Rendezvous through c10d's TCPStore: rank 0 hosts the store on master_addr:master_port,
// every rank (rank 0 included) is a client of it. The store is PyTorch's own, so a
// Python process using torch.distributed speaks the same protocol.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <c10/util/intrusive_ptr.h>

#include "runtime/env/cluster_env.h"

namespace c10d {
class TCPStore;
}

namespace ddp::rendezvous {

// torchrun's and c10d's default port; the Kubeflow PyTorchJob default is 23456 and
// arrives through MASTER_PORT.
using env::kDefaultMasterPort;
constexpr std::chrono::seconds kDefaultRendezvousTimeout{300};

struct TcpStoreOptions {
  std::string masterAddr = "127.0.0.1";
  // Port of the store. On rank 0, 0 asks the kernel for a free port (see getPort()).
  std::uint16_t masterPort = kDefaultMasterPort;
  int rank = 0;
  int worldSize = 1;
  // How long clients try to reach the master, and how long store operations wait.
  std::chrono::milliseconds timeout = kDefaultRendezvousTimeout;
};

// Rank 0 starts the server and connects to it; the others connect. Throws
// c10::DistStoreError (with host, port and elapsed time) when the master stays
// unreachable for options.timeout.
c10::intrusive_ptr<c10d::TCPStore> connectTcpStore(const TcpStoreOptions& options);

}  // namespace ddp::rendezvous
