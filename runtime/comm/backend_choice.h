// Which collective backend a rank uses, how every rank of a job comes to use the same one,
// and why a CUDA device cannot be used when none can.
#pragma once

#include <string>

#include "runtime/comm/process_group.h"

namespace c10d {
class Store;
}

namespace ddp::comm {

// Note [One backend for every rank]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// --backend auto picks NCCL where a CUDA device is visible and Gloo where none is. One rank
// without a device among ranks with one (a pod that lost its nvidia.com/gpu limit, a node
// whose driver is too old for this build) picked Gloo while the others picked NCCL, and the
// two kinds of group waited for each other until the collective timeout. So rank 0 decides:
// right after the rendezvous it publishes its backend in the store, and every other rank
// takes it. A rank that cannot use rank 0's backend (NCCL without CUDA) ends at once with a
// permanent error that names itself and why; so does a rank whose explicit --backend differs
// from rank 0's, since the ranks of one job must be given the same one. A rank with CUDA that
// is told Gloo follows (rank 0 has no GPU: CPU tensors for everyone) and says so. A rank 0
// that is plain torch.distributed (the same store, Python's own process) publishes nothing:
// after 10 s the others keep their own choice, as before.

struct BackendChoice {
  std::string requested;           // "auto", "gloo" or "nccl", as this rank was given it
  Backend local = Backend::kGloo;  // what this rank resolved on its own (resolveBackend)
};

// Rank 0 publishes choice.local and returns it; any other rank waits for rank 0's and
// returns it, or throws ConfigError naming `rank` and `host`.
Backend agreeOnBackend(c10d::Store& store, int rank, const std::string& host,
                       const BackendChoice& choice);

// What the CUDA runtime reported when it found no usable device, read once.
struct CudaProbe {
  int error = 0;           // cudaGetDeviceCount's cudaError_t (0: none)
  std::string errorName;   // e.g. "cudaErrorInsufficientDriver"
  int devices = 0;         // devices it counted
  int driverVersion = 0;   // cudaDriverGetVersion: 12040 = CUDA 12.4; 0 = no driver loaded
  int runtimeVersion = 0;  // cudaRuntimeGetVersion of this build's runtime: 13020 = 13.2
  std::string nodeDriver;  // "570.86.15" from /proc/driver/nvidia/version, or empty
};

// This process's probe (a CUDA-off build: error set, errorName "no CUDA in this build").
CudaProbe probeCuda();

// Why no CUDA device can be used, in words that say what to do: no driver in the container,
// a driver older than this build's CUDA needs (naming both versions), no device visible.
// Empty when a device can be used.
std::string describeCudaProblem(const CudaProbe& probe);

// The oldest NVIDIA driver the CUDA runtime of major version `cudaMajor` needs on Linux
// (NVIDIA's CUDA compatibility table: 13 -> 580, 12 -> 525, 11 -> 450), empty if unknown.
std::string minimumDriverFor(int cudaMajor);

// Throws ConfigError when the GPU's compute capability is below sm_75, the oldest this
// torch (CUDA 13) was built for: its kernels would fail with "no kernel image is available".
void checkCudaDeviceSupported(int device);

}  // namespace ddp::comm
