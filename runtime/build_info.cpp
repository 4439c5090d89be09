#include "runtime/build_info.h"

#include <fmt/format.h>

#include "runtime/config.h"
#if HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace ddp {

BuildInfo buildInfo() {
  BuildInfo info;
  info.ddprunVersion = DDPRUN_VERSION;
  info.torchVersion = DDPRUN_TORCH_VERSION;
#if HAVE_CUDA
  info.cuda = true;
  cudaRuntimeGetVersion(&info.cudaRuntimeVersion);
  ncclGetVersion(&info.ncclVersion);
#endif
  return info;
}

std::string describeBuild(const BuildInfo& info) {
  std::string cuda = "CPU only";
  if (info.cuda) {
    // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
    cuda = fmt::format("CUDA runtime {}.{}, NCCL {}.{}.{}", info.cudaRuntimeVersion / 1000,
                       info.cudaRuntimeVersion % 1000 / 10, info.ncclVersion / 10000,
                       info.ncclVersion % 10000 / 100, info.ncclVersion % 100);
  }
  return fmt::format("ddprun {} (torch {}, {})", info.ddprunVersion, info.torchVersion, cuda);
}

}  // namespace ddp
