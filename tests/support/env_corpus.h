// What the fuzz tests of environment readers share (cluster_env, node_env, the launcher's
// flags): an environment written as text, one NAME=value a line, and a corpus of the
// environments each launcher really gives (../shared/k8s-env-contract.md).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runtime/env/variables.h"

namespace ddp::testing::fuzz {

// "NAME=value" lines -> a map (a later line wins; a line without '=' is skipped, as
// environ has none).
inline std::map<std::string, std::string> environmentOf(const std::string& text) {
  std::map<std::string, std::string> env;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    const std::string line = text.substr(start, end - start);
    if (const auto equals = line.find('='); equals != std::string::npos) {
      env[line.substr(0, equals)] = line.substr(equals + 1);
    }
    start = end + 1;
  }
  return env;
}

// One environment of each source of Note [Environment precedence], and a few edges.
inline const std::vector<std::string>& environmentCorpus() {
  static const std::vector<std::string> corpus = {
      "",
      // torchrun / ddprun's workers
      "RANK=3\nWORLD_SIZE=8\nLOCAL_RANK=1\nLOCAL_WORLD_SIZE=2\nGROUP_RANK=1\n"
      "GROUP_WORLD_SIZE=4\nMASTER_ADDR=10.0.0.1\nMASTER_PORT=29500\n"
      "TORCHELASTIC_RESTART_COUNT=2\nDDPRUN_RESTART_COUNT=2\nPET_MASTER_ADDR=other\n",
      // PyTorchJob v1 with nprocPerNode
      "MASTER_ADDR=job-master-0\nMASTER_PORT=23456\nRANK=1\nWORLD_SIZE=3\nPET_NNODES=3\n"
      "PET_NODE_RANK=1\nPET_NPROC_PER_NODE=1\nPET_MASTER_ADDR=job-master-0\n"
      "PET_MASTER_PORT=23456\n",
      // PyTorchJob v1 before 1.7
      "MASTER_ADDR=job-master-0\nMASTER_PORT=23456\nRANK=0\nWORLD_SIZE=2\n",
      // Trainer v2
      "PET_NNODES=2\nPET_NODE_RANK=1\nPET_NPROC_PER_NODE=auto\n"
      "PET_MASTER_ADDR=trainjob-node-0-0.trainjob\nPET_MASTER_PORT=29400\n",
      "PET_NNODES=4:4\nPET_NODE_RANK=3\nPET_MASTER_ADDR=fe80::1\n",
      // Open MPI, MPICH / Intel MPI
      "OMPI_COMM_WORLD_RANK=1\nOMPI_COMM_WORLD_SIZE=4\nOMPI_COMM_WORLD_LOCAL_RANK=1\n"
      "OMPI_COMM_WORLD_LOCAL_SIZE=2\nRANK=1\nWORLD_SIZE=4\n",
      "PMI_RANK=0\nPMI_SIZE=2\nMPI_LOCALRANKID=0\nMPI_LOCALNRANKS=1\nMASTER_ADDR=::1\n",
      "PMI_ID=1\nPMI_SIZE=2\nOMPI_COMM_WORLD_RANK=1\nOMPI_COMM_WORLD_SIZE=2\n",
  };
  return corpus;
}

// Every variable the readers know, as the start of a line, and values of each kind.
inline std::vector<std::string> environmentDictionary() {
  namespace var = env::var;
  std::vector<std::string> pieces = {"=",   "\n",         ":",     "auto", "gpu", "cpu",
                                     "xpu", "host:29500", "[::1]", " ",    "0",   "1"};
  for (const char* name : {var::kRank,
                           var::kWorldSize,
                           var::kLocalRank,
                           var::kLocalWorldSize,
                           var::kGroupRank,
                           var::kGroupWorldSize,
                           var::kMasterAddr,
                           var::kMasterPort,
                           var::kTorchelasticRestartCount,
                           var::kRestartCount,
                           var::kPetNnodes,
                           var::kPetNodeRank,
                           var::kPetNprocPerNode,
                           var::kPetMasterAddr,
                           var::kPetMasterPort,
                           var::kPetMaxRestarts,
                           var::kPetStandalone,
                           var::kPetLogDir,
                           var::kPetRedirects,
                           var::kOmpiRank,
                           var::kOmpiSize,
                           var::kOmpiLocalRank,
                           var::kOmpiLocalSize,
                           var::kPmiRank,
                           var::kPmiId,
                           var::kPmiSize,
                           var::kMpiLocalRankId,
                           var::kMpiLocalNranks,
                           var::kCudaVisibleDevices,
                           var::kErrorFile,
                           var::kLogLevel,
                           var::kRendezvousTimeout,
                           var::kCollectiveTimeout}) {
    pieces.push_back(std::string(name) + "=");
  }
  return pieces;
}

}  // namespace ddp::testing::fuzz
