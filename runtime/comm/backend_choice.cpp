#include "runtime/comm/backend_choice.h"

#include <chrono>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "runtime/config.h"
#include "runtime/error.h"
#include "runtime/log/logging.h"

#if HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace ddp::comm {
namespace {

constexpr const char* kBackendKey = "ddprun/backend";
// Rank 0 publishes right after it hosts the store, before any other rank can connect to it
// (our master does not wait for workers), so the key is there when the others look: the wait
// only ends for a rank 0 that is not ddprun.
constexpr std::chrono::seconds kRankZeroSilence{10};

Backend backendNamed(const std::string& name) {
  if (name == "nccl") return Backend::kNccl;
  if (name == "gloo") return Backend::kGloo;
  throw ConfigError(fmt::format(
      "rank 0 published backend '{}' in the store, expected gloo or nccl: rank 0 runs another "
      "version of ddprun. ---> HINT: run the same ddprun image on every node.",
      name));
}

std::string versionText(int cudaVersion) {
  return fmt::format("{}.{}", cudaVersion / 1000, cudaVersion % 1000 / 10);
}

// "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  Thu ..." -> "570.86.15".
std::string readNodeDriver() {
  std::ifstream in("/proc/driver/nvidia/version");
  std::string line;
  if (!std::getline(in, line)) return "";
  std::smatch match;
  static const std::regex kVersion(R"(Kernel Module\s+(\d+\.\d+(\.\d+)?))");
  return std::regex_search(line, match, kVersion) ? match[1].str() : "";
}

[[maybe_unused]] int minimumComputeCapability(int cudaMajor) { return cudaMajor >= 13 ? 75 : 50; }

}  // namespace

Backend agreeOnBackend(c10d::Store& store, int rank, const std::string& host,
                       const BackendChoice& choice) {
  const std::string mine(backendName(choice.local));
  if (rank == 0) {
    store.set(kBackendKey, std::vector<uint8_t>(mine.begin(), mine.end()));
    return choice.local;
  }
  // Note [One backend for every rank]: a rank 0 outside ddprun (torch.distributed joining the
  // same store) publishes nothing; after kRankZeroSilence this rank keeps its own choice.
  try {
    store.wait({kBackendKey}, kRankZeroSilence);
  } catch (const c10::DistError&) {
    log::debug("init", "event=backend_not_published wait_s={} backend={} (rank 0 is not ddprun)",
               kRankZeroSilence.count(), mine);
    return choice.local;
  }
  const auto published = store.get(kBackendKey);
  const std::string chosen(published.begin(), published.end());
  const Backend rankZero = backendNamed(chosen);
  if (rankZero == choice.local) return rankZero;
  if (choice.requested != "auto") {
    throw ConfigError(fmt::format(
        "rank {} on {} was given --backend {}, but rank 0 uses {}: every rank of a job must "
        "use the same backend. ---> HINT: give every rank the same --backend (or auto, and "
        "rank 0 decides).",
        rank, host, choice.requested, chosen));
  }
  // Under auto, a rank that resolved Gloo is one that can use no CUDA device.
  if (rankZero == Backend::kNccl) {
    throw ConfigError(fmt::format(
        "rank {} on {} cannot follow rank 0's backend nccl (--backend auto, and rank 0 sees a "
        "GPU): {} ---> HINT: give every pod of the job the same nvidia.com/gpu limit on nodes "
        "with a recent enough driver, or run all ranks with --backend gloo.",
        rank, host, describeCudaProblem(probeCuda())));
  }
  log::info("init", "event=backend_follows_rank0 backend={} local_choice={}", chosen, mine);
  return rankZero;
}

CudaProbe probeCuda() {
  CudaProbe probe;
  probe.nodeDriver = readNodeDriver();
#if HAVE_CUDA
  const cudaError_t error = cudaGetDeviceCount(&probe.devices);
  probe.error = static_cast<int>(error);
  if (error != cudaSuccess) {
    probe.errorName = cudaGetErrorName(error);
    probe.devices = 0;
    cudaGetLastError();  // clear the sticky-free error so that torch's own probe starts clean
  }
  cudaDriverGetVersion(&probe.driverVersion);
  cudaRuntimeGetVersion(&probe.runtimeVersion);
#else
  probe.error = -1;
  probe.errorName = "no CUDA in this build";
#endif
  return probe;
}

std::string minimumDriverFor(int cudaMajor) {
  if (cudaMajor >= 13) return "580";
  if (cudaMajor == 12) return "525";
  if (cudaMajor == 11) return "450";
  return "";
}

std::string describeCudaProblem(const CudaProbe& probe) {
  if (probe.error == 0 && probe.devices > 0) return "";
  if (probe.error == -1) {
    return "this build has no CUDA (DDPRUN_WITH_CUDA=OFF); use a CUDA build.";
  }
  const std::string needed = versionText(probe.runtimeVersion);
  const std::string neededDriver = minimumDriverFor(probe.runtimeVersion / 1000);
  const std::string node = probe.nodeDriver.empty() ? "" : " " + probe.nodeDriver;
  if (probe.driverVersion == 0) {
    return fmt::format(
        "no NVIDIA driver (libcuda.so.1) is loaded in this container{}: the pod asked for no "
        "GPU (nvidia.com/gpu limit), or its node has no NVIDIA container toolkit.",
        probe.nodeDriver.empty() ? "" : " (the node's kernel module is" + node + ")");
  }
  if (probe.driverVersion < probe.runtimeVersion &&
      (probe.errorName == "cudaErrorInsufficientDriver" ||
       probe.errorName == "cudaErrorCompatNotSupportedOnDevice" ||
       probe.driverVersion / 1000 < probe.runtimeVersion / 1000)) {
    return fmt::format(
        "the node's NVIDIA driver{} supports CUDA {}, but this build's CUDA runtime {} needs a "
        "driver{} ({}). Upgrade the node's driver{}, or schedule the job on nodes that have it.",
        node, versionText(probe.driverVersion), needed,
        neededDriver.empty() ? " for CUDA " + needed : " >= " + neededDriver, probe.errorName,
        neededDriver.empty() ? "" : " to " + neededDriver + " or newer");
  }
  if (probe.devices == 0 && (probe.error == 0 || probe.errorName == "cudaErrorNoDevice")) {
    return fmt::format(
        "the NVIDIA driver{} (CUDA {}) sees no device: check the pod's nvidia.com/gpu limit and "
        "CUDA_VISIBLE_DEVICES.",
        node, versionText(probe.driverVersion));
  }
  return fmt::format("the CUDA runtime {} reports {} (driver{}, CUDA {}).", needed, probe.errorName,
                     node, versionText(probe.driverVersion));
}

void checkCudaDeviceSupported(int device) {
#if HAVE_CUDA
  cudaDeviceProp properties{};
  if (cudaGetDeviceProperties(&properties, device) != cudaSuccess) return;  // torch will say
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  const int capability = properties.major * 10 + properties.minor;
  const int oldest = minimumComputeCapability(runtime / 1000);
  if (capability < oldest) {
    throw ConfigError(fmt::format(
        "GPU {} ({}) has compute capability {}.{}, but this build's CUDA {} and LibTorch run on "
        "sm_{} and newer only: its kernels would fail with \"no kernel image is available\". "
        "---> HINT: schedule the job on newer GPUs (node affinity), or use a LibTorch built "
        "for this GPU.",
        device, properties.name, properties.major, properties.minor, versionText(runtime), oldest));
  }
#else
  (void)device;
#endif
}

}  // namespace ddp::comm
