#include "runtime/comm/process_group.h"

#include "runtime/comm/backend_choice.h"

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

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

// The key space torch.distributed uses for its default group (init_process_group:
// PrefixStore("default_pg") / "<group name>/" / "<device>/"), so that a Python peer and we
// meet under the same keys.
c10::intrusive_ptr<c10d::Store> groupStore(const c10::intrusive_ptr<c10d::Store>& store) {
  auto defaultStore = c10::make_intrusive<c10d::PrefixStore>("default_pg", store);
  return c10::make_intrusive<c10d::PrefixStore>(kDefaultGroupName, defaultStore);
}
c10::intrusive_ptr<c10d::Store> glooStore(const c10::intrusive_ptr<c10d::Store>& store) {
  return c10::make_intrusive<c10d::PrefixStore>("cpu/", groupStore(store));
}

std::shared_ptr<::gloo::transport::Device> createGlooDevice() {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

c10::intrusive_ptr<c10d::Backend> createGloo(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                             int worldSize, const ProcessGroupOptions& options) {
  // Note [Waiting for the other ranks]: the join gets joinTimeout, the collectives timeout.
  auto glooOptions = c10d::ProcessGroupGloo::Options::create(options.joinTimeout);
  glooOptions->devices.push_back(createGlooDevice());
  glooOptions->threads = options.glooThreads;
  auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, worldSize, glooOptions);
  gloo->setTimeout(options.timeout);
  return gloo;
}

#if HAVE_NCCL
c10::intrusive_ptr<c10d::Backend> createNccl(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                             int worldSize, const ProcessGroupOptions& options) {
  TORCH_CHECK(torch::cuda::is_available(), "backend 'nccl' needs a CUDA device, and rank ", rank,
              " can use none: ", describeCudaProblem(probeCuda()),
              " Use --backend gloo, or fix that.");
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
  auto group = c10::make_intrusive<c10d::ProcessGroup>(groupStore(store), rank, worldSize);
  switch (options.backend) {
    case Backend::kGloo: {
      auto gloo = createGloo(glooStore(store), rank, worldSize, options);
      group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
      group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
      break;
    }
    case Backend::kNccl: {
#if HAVE_NCCL
      auto nccl = createNccl(c10::make_intrusive<c10d::PrefixStore>("cuda/", groupStore(store)),
                             rank, worldSize, options);
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

std::optional<std::vector<int>> ranksWithoutGlooAddress(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int worldSize) {
  // c10d's ProcessGroupGloo writes rank r's address under "<device index>/<r>": "0/<r>".
  auto addresses = c10::make_intrusive<c10d::PrefixStore>("0", glooStore(store));
  auto has = [&](int r) { return addresses->check({std::to_string(r)}); };
  if (!has(rank)) return std::nullopt;  // another layout: the store cannot tell
  std::vector<int> missing;
  for (int r = 0; r < worldSize; ++r) {
    if (!has(r)) missing.push_back(r);
  }
  return missing;
}

}  // namespace ddp::comm
