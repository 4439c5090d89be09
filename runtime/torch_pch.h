// The precompiled header shared by all targets: LibTorch and the c10d pieces we use.
// Parsing these costs ~20 s per translation unit; precompiled, well under a second.
// ProcessGroupGloo.hpp is left out on purpose: it needs Gloo's headers, which only
// runtime/comm/process_group.cpp gets (see the Note there).
#pragma once

#include <torch/torch.h>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "runtime/config.h"
#if HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
