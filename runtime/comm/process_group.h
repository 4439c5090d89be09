// Process groups over a rendezvous store: Gloo for CPU tensors, NCCL for CUDA tensors.
// The result is a c10d::ProcessGroup, the type c10d's Reducer and PyTorch's DDP use.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include <c10/util/intrusive_ptr.h>

namespace c10d {
class ProcessGroup;
class Store;
}  // namespace c10d

namespace ddp::comm {

enum class Backend { kGloo, kNccl };

// c10d's default collective timeout (30 min, as torch.distributed's).
constexpr std::chrono::minutes kDefaultCollectiveTimeout{30};

struct ProcessGroupOptions {
  Backend backend = Backend::kGloo;
  // A collective that does not complete in this time fails instead of hanging.
  std::chrono::milliseconds timeout = kDefaultCollectiveTimeout;
  // Gloo: threads that run collectives (torch's default is 2).
  int glooThreads = 2;
  // NCCL: the CUDA device this rank drives (usually the local rank).
  int cudaDevice = 0;
};

std::string_view backendName(Backend backend);

// Builds the group on `store` (rank 0 must host it). Gloo binds the interface named by
// GLOO_SOCKET_IFNAME if set (as torch.distributed does), else this host's address.
// Throws c10::Error when the backend cannot be used here (e.g. NCCL without CUDA).
c10::intrusive_ptr<c10d::ProcessGroup> createProcessGroup(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int worldSize,
    const ProcessGroupOptions& options);

}  // namespace ddp::comm
