#include "runtime/comm/process_group.h"

#include <cstdlib>

#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "runtime/config.h"
#if HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace ddp::comm {
namespace {

// torch.distributed names its groups by creation count; the default group is "0".
constexpr const char* kDefaultGroupName = "0/";

std::shared_ptr<::gloo::transport::Device> createGlooDevice() {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

c10::intrusive_ptr<c10d::Backend> createGloo(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                             int worldSize, const ProcessGroupOptions& options) {
  auto glooOptions = c10d::ProcessGroupGloo::Options::create(options.timeout);
  glooOptions->devices.push_back(createGlooDevice());
  glooOptions->threads = options.glooThreads;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, worldSize, glooOptions);
}

#if HAVE_NCCL
c10::intrusive_ptr<c10d::Backend> createNccl(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                             int worldSize, const ProcessGroupOptions& options) {
  TORCH_CHECK(torch::cuda::is_available(),
              "backend 'nccl' needs CUDA, but no CUDA device is visible to this process "
              "(rank ",
              rank, "). Use --backend gloo, or check the GPU resources of the pod.");
  TORCH_CHECK(
      options.cudaDevice >= 0 && options.cudaDevice < static_cast<int>(torch::cuda::device_count()),
      "rank ", rank, " wants CUDA device ", options.cudaDevice, " but only ",
      torch::cuda::device_count(), " are visible.");
  auto ncclOptions = c10d::ProcessGroupNCCL::Options::create();
  ncclOptions->timeout = options.timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, worldSize, ncclOptions);
}
#endif

}  // namespace

std::string_view backendName(Backend backend) {
  switch (backend) {
    case Backend::kGloo:
      return "gloo";
    case Backend::kNccl:
      return "nccl";
  }
  return "unknown";
}

c10::intrusive_ptr<c10d::ProcessGroup> createProcessGroup(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int worldSize,
    const ProcessGroupOptions& options) {
  // The key space torch.distributed uses for its default group (init_process_group:
  // PrefixStore("default_pg") / "<group name>/" / "<device>/"), so that a Python peer
  // and we meet under the same keys.
  auto defaultStore = c10::make_intrusive<c10d::PrefixStore>("default_pg", store);
  auto groupStore = c10::make_intrusive<c10d::PrefixStore>(kDefaultGroupName, defaultStore);
  auto group = c10::make_intrusive<c10d::ProcessGroup>(groupStore, rank, worldSize);
  switch (options.backend) {
    case Backend::kGloo: {
      auto gloo = createGloo(c10::make_intrusive<c10d::PrefixStore>("cpu/", groupStore), rank,
                             worldSize, options);
      group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
      group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
      break;
    }
    case Backend::kNccl: {
#if HAVE_NCCL
      auto nccl = createNccl(c10::make_intrusive<c10d::PrefixStore>("cuda/", groupStore), rank,
                             worldSize, options);
      group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
      group->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
      break;
#else
      TORCH_CHECK(false,
                  "backend 'nccl' was requested but this ddprun was built without "
                  "CUDA/NCCL (DDPRUN_WITH_CUDA=OFF). Use --backend gloo.");
#endif
    }
  }
  return group;
}

}  // namespace ddp::comm
