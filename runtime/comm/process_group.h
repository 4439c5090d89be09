// Process groups over a rendezvous store: Gloo for CPU tensors, NCCL for CUDA tensors.
// The result is a c10d::ProcessGroup, the type c10d's Reducer and PyTorch's DDP use.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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
  // Gloo: how long the ranks wait for each other while the group forms (ddp::init passes
  // the rendezvous timeout). Note [Waiting for the other ranks].
  std::chrono::milliseconds joinTimeout = kDefaultCollectiveTimeout;
  // Gloo: threads that run collectives (torch's default is 2).
  int glooThreads = 2;
  // NCCL: the CUDA device this rank drives (usually the local rank).
  int cudaDevice = 0;
};

std::string_view backendName(Backend backend);

// Note [Waiting for the other ranks]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Gloo forms its group eagerly: each rank writes its address into the store and waits for
// every other rank's. A rank that never comes (its pod Pending, a crash before ddp::init got
// here) made the others wait the collective timeout (30 min by default) and then fail with
// c10d's "wait timeout after 1800000ms, keys: /default_pg/0//cpu//0/1". That wait is part of
// the rendezvous: it gets joinTimeout (the rendezvous timeout), the group the collective
// timeout afterwards. The wait fails with a c10::DistError; ddp::init turns it into a
// RendezvousError naming the ranks ranksWithoutGlooAddress() finds. Rank 0 hosts the store
// and can always name them; another rank finds the store gone when rank 0 gave up first. NCCL
// connects at the first collective instead, outside this function.

// Builds the group on `store` (rank 0 must host it). Gloo binds the interface named by
// GLOO_SOCKET_IFNAME if set (as torch.distributed does), else this host's address.
// Throws c10::DistError when not every rank joins within joinTimeout (Note above),
// c10::Error when the backend cannot be used here (e.g. NCCL without CUDA).
c10::intrusive_ptr<c10d::ProcessGroup> createProcessGroup(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int worldSize,
    const ProcessGroupOptions& options);

// After a Gloo group failed to form on `store`: the ranks whose address is not in it, those
// that never reached the group's setup. nullopt when the store cannot tell (c10d keeps the
// addresses elsewhere: not even `rank`'s own is found); throws what the store throws when
// it no longer answers (c10::DistError: rank 0, its host, has gone).
std::optional<std::vector<int>> ranksWithoutGlooAddress(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int worldSize);

}  // namespace ddp::comm
