#include "runtime/rendezvous/tcp_store.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace ddp::rendezvous {

c10::intrusive_ptr<c10d::TCPStore> connectTcpStore(const TcpStoreOptions& options) {
  TORCH_CHECK(options.worldSize >= 1, "world size must be >= 1, got ", options.worldSize);
  TORCH_CHECK(options.rank >= 0 && options.rank < options.worldSize, "rank ", options.rank,
              " outside [0, ", options.worldSize, ")");
  c10d::TCPStoreOptions storeOptions;
  storeOptions.port = options.masterPort;
  storeOptions.isServer = options.rank == 0;
  storeOptions.numWorkers = static_cast<std::size_t>(options.worldSize);
  // The process group's own barrier-like setup waits for everyone; the store need not.
  storeOptions.waitWorkers = false;
  storeOptions.timeout = options.timeout;
  return c10::make_intrusive<c10d::TCPStore>(options.masterAddr, storeOptions);
}

}  // namespace ddp::rendezvous
