// The umbrella header for a program of its own on ddprun (README, "Your own training
// program"): ddp::init() and the process group it returns (with c10d's complete types, so
// `dist.group->allreduce(...)` compiles), and ddp::DistributedDataParallel.
#pragma once

#include "runtime/ddp/distributed_data_parallel.h"
#include "runtime/distributed.h"
#include "runtime/metrics/training_metrics.h"
