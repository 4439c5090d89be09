// The private readers behind resolveClusterEnv() (one process) and resolveNodeEnv() (one
// node): each variable is read, range-checked and cross-checked here once, so that the
// process view and the node view cannot disagree about what a variable means or how a
// bad one is reported. Not a public header: include cluster_env.h or node_env.h.
#pragma once

#include <optional>
#include <string>

#include "runtime/env/cluster_env.h"

namespace ddp::env::detail {

constexpr int kIntMax = 2147483647;
constexpr int kPortMax = 65535;

// An integer variable as read: its name and raw text for messages, its value for logic.
struct IntVar {
  std::string name;
  std::string raw;
  int value = 0;
};

std::string show(const IntVar& var);  // "NAME=raw"

// nullopt when unset; EnvError when set but not an integer in [min, max].
std::optional<IntVar> readInt(const EnvMap& env, const std::string& name, int min, int max);

EnvError missingPartner(const std::string& missing, const std::string& present,
                        const std::string& presentValue);
// One variable of a pair without the other means a hand-edited or half-forwarded env.
void requireTogether(const EnvMap& env, const std::string& first, const std::string& second);
// The pairs both views check: RANK/WORLD_SIZE and the MPI ones. (LOCAL_RANK/LOCAL_WORLD_SIZE
// is the process view's alone: a node refuses LOCAL_RANK, and its workers get both.)
void requirePairs(const EnvMap& env);
void checkRankBelow(const IntVar& rank, const IntVar& size);
void checkNotAbove(const IntVar& part, const IntVar& whole);
// `other` is a lower-precedence variable describing the same quantity as `chosen`.
void checkAgree(const IntVar& chosen, const IntVar& other, const std::string& hint);

extern const std::string kStaleHint;

// rank/worldSize plus optional local rank/size, as one launcher reported them.
struct RankLayout {
  EnvSource source = EnvSource::kDefault;
  IntVar rank;
  IntVar worldSize;
  std::optional<IntVar> localRank;
  std::optional<IntVar> localWorldSize;
};

// Open MPI if present (cross-checked against PMI), else MPICH / Intel MPI, else nothing.
std::optional<RankLayout> readMpi(const EnvMap& env);

// PET_NNODES as a node count (see parsePetNnodes).
std::optional<IntVar> readNnodes(const EnvMap& env);

struct NprocPerNode {
  std::string raw;
  int count = 1;
  bool symbolic = false;  // auto/cpu/gpu/xpu: a device count only a launcher can resolve
};
std::optional<NprocPerNode> readNprocPerNode(const EnvMap& env);

// The master as the environment names it: MASTER_ADDR/MASTER_PORT, else PET_MASTER_ADDR/
// PET_MASTER_PORT; both set and different is an error unless `checkPet` is false (then
// PET_* only fill gaps). Addresses must be a bare host: no port, no whitespace.
struct MasterVars {
  std::optional<std::string> addr;
  std::string addrOrigin;  // the variable addr came from
  std::optional<IntVar> port;
};
// `readAddrs`/`readPorts` false leave that half unread (a launcher flag decides it).
MasterVars readMaster(const EnvMap& env, bool checkPet, bool readAddrs = true,
                      bool readPorts = true);

}  // namespace ddp::env::detail
