// The node view of the environment: how many nodes the job has, which one this is, how
// many processes it may start and where rank 0's store lives. ddprun's launcher puts its
// flags on top of it (launcher/launch_plan.h); ddp::init() uses the process view
// (cluster_env.h). Both come from the same readers: Note [Environment precedence].
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "runtime/env/cluster_env.h"

namespace ddp::env {

struct NodeEnv {
  int nnodes = 1;
  // PET_NNODES=MIN:MAX (an elastic PyTorchJob): nnodes is MIN, this MAX. Only a rendezvous
  // that assigns node ranks (ddprun's c10d backend) runs such a node; nodeRank stays 0.
  std::optional<int> maxNodes;
  int nodeRank = 0;
  // As written in PET_NPROC_PER_NODE: "N", auto, cpu, gpu or xpu; only a launcher knows
  // the devices that the symbolic ones count. Unset: the launcher's default.
  std::optional<std::string> nprocPerNode;
  // MASTER_ADDR, else PET_MASTER_ADDR (a bare host); unset when neither is set.
  std::optional<std::string> masterAddr;
  std::optional<std::uint16_t> masterPort;
  EnvSource source = EnvSource::kDefault;
  // Field name ("nnodes", "nodeRank", "nprocPerNode", "masterAddr", "masterPort") -> the
  // variable it came from, or "default" / "unset".
  std::map<std::string, std::string> origins;
};

// What the launcher's flags already decide. Those variables are left unread, as in
// torchrun: a flag wins, and a variable nobody uses cannot fail the launch.
struct NodeFlags {
  bool nnodes = false;
  bool nodeRank = false;
  bool nprocPerNode = false;
  bool masterAddr = false;
  bool masterPort = false;
};

// See Note [Environment precedence], the node column. Throws EnvError; refuses a
// worker's environment (LOCAL_RANK set).
NodeEnv resolveNodeEnv(const EnvMap& env, const NodeFlags& given = {});

}  // namespace ddp::env
