// What this build of ddprun contains, asked from the linked libraries themselves
// (the CUDA runtime and NCCL answer without a GPU).
#pragma once

#include <string>

namespace ddp {

struct BuildInfo {
  std::string ddprunVersion;
  std::string torchVersion;
  bool cuda = false;
  int cudaRuntimeVersion = 0;  // e.g. 13020 for 13.2; 0 without CUDA
  int ncclVersion = 0;         // e.g. 23007 for 2.30.7; 0 without NCCL
};

BuildInfo buildInfo();

// One line: "ddprun 0.1.0 (torch 2.15.0, CUDA runtime 13.2, NCCL 2.30.7)".
std::string describeBuild(const BuildInfo& info);

}  // namespace ddp
