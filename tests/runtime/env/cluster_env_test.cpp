// resolveClusterEnv() against the exact environments each launcher and operator injects
// (k8s-env-contract.md): one row per supported source with every resolved field, and one row
// per rejected input with the variable the error must name.
#include "runtime/env/cluster_env.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <initializer_list>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace ddp::env {
namespace {

// `base` with `set` applied and `unset` removed.
EnvMap with(EnvMap base, std::initializer_list<std::pair<const std::string, std::string>> set,
            std::initializer_list<std::string> unset = {}) {
  for (const auto& [name, value] : set) base[name] = value;
  for (const auto& name : unset) base.erase(name);
  return base;
}

// What torchrun (and ddprun's launcher) gives worker 1 of 4 on one node.
const EnvMap kTorchrun = {{"RANK", "1"},           {"WORLD_SIZE", "4"},
                          {"LOCAL_RANK", "1"},     {"LOCAL_WORLD_SIZE", "4"},
                          {"GROUP_RANK", "0"},     {"MASTER_ADDR", "127.0.0.1"},
                          {"MASTER_PORT", "29500"}};
// PyTorchJob (operator v1.9), Worker-0 of a Master + 1 Worker job, nprocPerNode auto.
const EnvMap kPyTorchJob = {{"PYTHONUNBUFFERED", "1"},
                            {"MASTER_ADDR", "job-master-0"},
                            {"MASTER_PORT", "23456"},
                            {"WORLD_SIZE", "2"},
                            {"RANK", "1"},
                            {"PET_NODE_RANK", "1"},
                            {"PET_NPROC_PER_NODE", "auto"},
                            {"PET_NNODES", "2"},
                            {"PET_MASTER_ADDR", "job-master-0"},
                            {"PET_MASTER_PORT", "23456"}};
// Trainer v2 torch runtime, node 1 of 2, numProcPerNode 1.
const EnvMap kTrainerV2 = {{"PET_NNODES", "2"},
                           {"PET_NPROC_PER_NODE", "1"},
                           {"PET_NODE_RANK", "1"},
                           {"PET_MASTER_ADDR", "tj-node-0-0.tj"},
                           {"PET_MASTER_PORT", "29500"}};
// mpirun -np 2 in an MPIJob with slotsPerWorker 1: rank 1 on the second worker.
const EnvMap kOpenMpi = {{"OMPI_COMM_WORLD_RANK", "1"},
                         {"OMPI_COMM_WORLD_SIZE", "2"},
                         {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                         {"OMPI_COMM_WORLD_LOCAL_SIZE", "1"}};

struct Resolved {
  int rank;
  int worldSize;
  int localRank;
  int localWorldSize;
  int nodeRank;
  int numNodes;
  std::string masterAddr;
  int masterPort;
  EnvSource source;
  int restartCount;
};

struct GoodCase {
  std::string name;
  EnvMap env;
  Resolved want;
  // Must name at least rank, worldSize and masterAddr.
  std::map<std::string, std::string> origins;
};

void PrintTo(const GoodCase& row, std::ostream* out) { *out << row.name; }

const std::vector<GoodCase> kGoodCases = {
    {"Default",
     {},
     {0, 1, 0, 1, 0, 1, "127.0.0.1", 29500, EnvSource::kDefault, 0},
     {{"rank", "default"},
      {"worldSize", "default"},
      {"localRank", "default"},
      {"nodeRank", "default"},
      {"masterAddr", "default"},
      {"masterPort", "default"},
      {"restartCount", "default"}}},
    {"TorchrunSingleNode",
     with(kTorchrun, {{"MASTER_PORT", "29501"},
                      {"GROUP_WORLD_SIZE", "1"},
                      {"ROLE_RANK", "1"},
                      {"ROLE_NAME", "default"},
                      {"ROLE_WORLD_SIZE", "4"},
                      {"TORCHELASTIC_RESTART_COUNT", "2"},
                      {"TORCHELASTIC_MAX_RESTARTS", "3"},
                      {"TORCHELASTIC_RUN_ID", "none"},
                      {"TORCHELASTIC_USE_AGENT_STORE", "True"}}),
     {1, 4, 1, 4, 0, 1, "127.0.0.1", 29501, EnvSource::kTorchrun, 2},
     {{"rank", "RANK"},
      {"worldSize", "WORLD_SIZE"},
      {"localRank", "LOCAL_RANK"},
      {"localWorldSize", "LOCAL_WORLD_SIZE"},
      {"nodeRank", "GROUP_RANK"},
      {"numNodes", "GROUP_WORLD_SIZE"},
      {"masterAddr", "MASTER_ADDR"},
      {"masterPort", "MASTER_PORT"},
      {"restartCount", "TORCHELASTIC_RESTART_COUNT"}}},
    // c10d rendezvous inside a PyTorchJob pod: the worker's MASTER_* differ from the pod's
    // PET_MASTER_*, which were torchrun's input and are not cross-checked.
    {"TorchrunMultiNodeInPyTorchJobPod",
     {{"RANK", "5"},
      {"WORLD_SIZE", "8"},
      {"LOCAL_RANK", "1"},
      {"LOCAL_WORLD_SIZE", "4"},
      {"GROUP_RANK", "1"},
      {"MASTER_ADDR", "job-worker-0.job.ns.svc.cluster.local"},
      {"MASTER_PORT", "41234"},
      {"PET_MASTER_ADDR", "job-master-0"},
      {"PET_MASTER_PORT", "23456"},
      {"PET_NNODES", "2"},
      {"PET_NPROC_PER_NODE", "4"},
      {"PET_NODE_RANK", "1"}},
     {5, 8, 1, 4, 1, 2, "job-worker-0.job.ns.svc.cluster.local", 41234, EnvSource::kTorchrun, 0},
     {{"rank", "RANK"},
      {"worldSize", "WORLD_SIZE"},
      {"nodeRank", "GROUP_RANK"},
      {"numNodes", "WORLD_SIZE/LOCAL_WORLD_SIZE"},
      {"masterAddr", "MASTER_ADDR"},
      {"masterPort", "MASTER_PORT"}}},
    {"DdprunWorkerWithoutGroupRank",
     {{"RANK", "6"},
      {"WORLD_SIZE", "8"},
      {"LOCAL_RANK", "2"},
      {"LOCAL_WORLD_SIZE", "4"},
      {"MASTER_ADDR", "10.0.0.1"},
      {"MASTER_PORT", "29500"},
      {"DDPRUN_RESTART_COUNT", "1"}},
     {6, 8, 2, 4, 1, 2, "10.0.0.1", 29500, EnvSource::kTorchrun, 1},
     {{"rank", "RANK"},
      {"worldSize", "WORLD_SIZE"},
      {"nodeRank", "RANK/LOCAL_WORLD_SIZE"},
      {"numNodes", "WORLD_SIZE/LOCAL_WORLD_SIZE"},
      {"masterAddr", "MASTER_ADDR"},
      {"restartCount", "DDPRUN_RESTART_COUNT"}}},
    {"TorchrunSingleProcessWithoutMaster",
     {{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"LOCAL_RANK", "0"}, {"LOCAL_WORLD_SIZE", "1"}},
     {0, 1, 0, 1, 0, 1, "127.0.0.1", 29500, EnvSource::kTorchrun, 0},
     {{"rank", "RANK"},
      {"worldSize", "WORLD_SIZE"},
      {"masterAddr", "default"},
      {"masterPort", "default"}}},
    // mpirun started one launcher per node; its workers inherit the launcher's OMPI_*.
    {"TorchrunUnderPerNodeMpirun",
     with(kTorchrun, {{"RANK", "5"},
                      {"WORLD_SIZE", "8"},
                      {"GROUP_RANK", "1"},
                      {"MASTER_ADDR", "node0"},
                      {"OMPI_COMM_WORLD_RANK", "1"},
                      {"OMPI_COMM_WORLD_SIZE", "2"},
                      {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                      {"OMPI_COMM_WORLD_LOCAL_SIZE", "1"}}),
     {5, 8, 1, 4, 1, 2, "node0", 29500, EnvSource::kTorchrun, 0},
     {{"rank", "RANK"}, {"worldSize", "WORLD_SIZE"}, {"masterAddr", "MASTER_ADDR"}}},
    {"PyTorchJobWorkerNprocAuto",
     kPyTorchJob,
     {1, 2, 0, 1, 1, 2, "job-master-0", 23456, EnvSource::kPyTorchJob, 0},
     {{"rank", "RANK"},
      {"worldSize", "WORLD_SIZE"},
      {"localRank", "default"},
      {"localWorldSize", "default"},
      {"nodeRank", "PET_NODE_RANK"},
      {"numNodes", "PET_NNODES"},
      {"masterAddr", "MASTER_ADDR"},
      {"masterPort", "MASTER_PORT"}}},
    {"PyTorchJobMasterNproc1",
     with(kPyTorchJob, {{"RANK", "0"},
                        {"PET_NODE_RANK", "0"},
                        {"WORLD_SIZE", "3"},
                        {"PET_NNODES", "3"},
                        {"PET_NPROC_PER_NODE", "1"}}),
     {0, 3, 0, 1, 0, 3, "job-master-0", 23456, EnvSource::kPyTorchJob, 0},
     {{"rank", "RANK"}, {"worldSize", "WORLD_SIZE"}, {"masterAddr", "MASTER_ADDR"}}},
    {"PyTorchJobElasticFixedRange",
     with(kPyTorchJob, {{"PET_NNODES", "2:2"},
                        {"PET_NPROC_PER_NODE", "gpu"},
                        {"PET_RDZV_BACKEND", "c10d"},
                        {"PET_RDZV_ENDPOINT", "job-worker-0:23456"},
                        {"PET_STANDALONE", ""}}),
     {1, 2, 0, 1, 1, 2, "job-master-0", 23456, EnvSource::kPyTorchJob, 0},
     {{"rank", "RANK"},
      {"worldSize", "WORLD_SIZE"},
      {"numNodes", "PET_NNODES"},
      {"masterAddr", "MASTER_ADDR"}}},
    // PyTorchJob before v1.7, or any plain env:// launch.
    {"PyTorchJobBeforeV17",
     {{"RANK", "1"},
      {"WORLD_SIZE", "2"},
      {"MASTER_ADDR", "job-master-0"},
      {"MASTER_PORT", "23456"}},
     {1, 2, 0, 1, 1, 2, "job-master-0", 23456, EnvSource::kPyTorchJob, 0},
     {{"rank", "RANK"},
      {"worldSize", "WORLD_SIZE"},
      {"nodeRank", "RANK"},
      {"numNodes", "WORLD_SIZE"},
      {"masterAddr", "MASTER_ADDR"}}},
    {"TrainerV2Node1Of2",
     kTrainerV2,
     {1, 2, 0, 1, 1, 2, "tj-node-0-0.tj", 29500, EnvSource::kTrainerV2, 0},
     {{"rank", "PET_NODE_RANK"},
      {"worldSize", "PET_NNODES"},
      {"nodeRank", "PET_NODE_RANK"},
      {"numNodes", "PET_NNODES"},
      {"masterAddr", "PET_MASTER_ADDR"},
      {"masterPort", "PET_MASTER_PORT"}}},
    {"TrainerV2SingleNode",
     {{"PET_NNODES", "1"}},
     {0, 1, 0, 1, 0, 1, "127.0.0.1", 29500, EnvSource::kTrainerV2, 0},
     {{"rank", "default"}, {"worldSize", "PET_NNODES"}, {"masterAddr", "default"}}},
    // OMPI_COMM_WORLD_NODE_RANK is a per-node process rank, not a node index: not used.
    {"OpenMpiWithoutMaster",
     {{"OMPI_COMM_WORLD_RANK", "2"},
      {"OMPI_COMM_WORLD_SIZE", "4"},
      {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
      {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
      {"OMPI_COMM_WORLD_NODE_RANK", "0"},
      {"OMPI_UNIVERSE_SIZE", "4"},
      {"PMIX_RANK", "2"}},
     {2, 4, 0, 2, 1, 2, "", 29500, EnvSource::kOpenMpi, 0},
     {{"rank", "OMPI_COMM_WORLD_RANK"},
      {"worldSize", "OMPI_COMM_WORLD_SIZE"},
      {"localRank", "OMPI_COMM_WORLD_LOCAL_RANK"},
      {"localWorldSize", "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"nodeRank", "OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"numNodes", "OMPI_COMM_WORLD_SIZE/OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"masterAddr", "unset"},
      {"masterPort", "default"}}},
    // mpirun -x MASTER_ADDR -x MASTER_PORT -x RANK -x WORLD_SIZE, all agreeing.
    {"OpenMpiWithMaster",
     with(kOpenMpi, {{"MASTER_ADDR", "job-launcher"},
                     {"MASTER_PORT", "29600"},
                     {"RANK", "1"},
                     {"WORLD_SIZE", "2"},
                     {"PMI_RANK", "1"},
                     {"PMI_SIZE", "2"}}),
     {1, 2, 0, 1, 1, 2, "job-launcher", 29600, EnvSource::kOpenMpi, 0},
     {{"rank", "OMPI_COMM_WORLD_RANK"},
      {"worldSize", "OMPI_COMM_WORLD_SIZE"},
      {"masterAddr", "MASTER_ADDR"},
      {"masterPort", "MASTER_PORT"}}},
    // -map-by node: rank 1 is local rank 0 of the second node; no node index is guessed.
    {"OpenMpiRoundRobinMapping",
     {{"OMPI_COMM_WORLD_RANK", "1"},
      {"OMPI_COMM_WORLD_SIZE", "4"},
      {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
      {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}},
     {1, 4, 0, 2, 0, 2, "", 29500, EnvSource::kOpenMpi, 0},
     {{"rank", "OMPI_COMM_WORLD_RANK"},
      {"worldSize", "OMPI_COMM_WORLD_SIZE"},
      {"nodeRank", "default"},
      {"masterAddr", "unset"}}},
    {"OpenMpiSingleProcess",
     {{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "1"}},
     {0, 1, 0, 1, 0, 1, "127.0.0.1", 29500, EnvSource::kOpenMpi, 0},
     {{"rank", "OMPI_COMM_WORLD_RANK"},
      {"worldSize", "OMPI_COMM_WORLD_SIZE"},
      {"localRank", "default"},
      {"masterAddr", "default"}}},
    {"MpichHydra",
     {{"PMI_RANK", "1"},
      {"PMI_SIZE", "2"},
      {"PMI_FD", "5"},
      {"MPI_LOCALRANKID", "1"},
      {"MPI_LOCALNRANKS", "2"}},
     {1, 2, 1, 2, 0, 1, "", 29500, EnvSource::kPmi, 0},
     {{"rank", "PMI_RANK"},
      {"worldSize", "PMI_SIZE"},
      {"localRank", "MPI_LOCALRANKID"},
      {"localWorldSize", "MPI_LOCALNRANKS"},
      {"nodeRank", "PMI_RANK/MPI_LOCALNRANKS"},
      {"masterAddr", "unset"}}},
    // Hydra's PMI_PORT mode (also Intel MPI) sets PMI_ID instead of PMI_RANK.
    {"IntelMpiPmiPortMode",
     {{"PMI_ID", "3"},
      {"PMI_SIZE", "4"},
      {"PMI_PORT", "launcher:4711"},
      {"MASTER_ADDR", "10.1.2.3"}},
     {3, 4, 0, 1, 0, 1, "10.1.2.3", 29500, EnvSource::kPmi, 0},
     {{"rank", "PMI_ID"},
      {"worldSize", "PMI_SIZE"},
      {"localRank", "default"},
      {"masterAddr", "MASTER_ADDR"}}},
    {"Ipv6Master",
     {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "fd00::1"}, {"MASTER_PORT", "1"}},
     {0, 2, 0, 1, 0, 2, "fd00::1", 1, EnvSource::kPyTorchJob, 0},
     {{"rank", "RANK"}, {"worldSize", "WORLD_SIZE"}, {"masterAddr", "MASTER_ADDR"}}},
};

class ResolveGoodTest : public ::testing::TestWithParam<GoodCase> {};

TEST_P(ResolveGoodTest, ResolvesEveryField) {
  const GoodCase& row = GetParam();
  const ClusterEnv got = resolveClusterEnv(row.env);
  SCOPED_TRACE(describe(got));
  EXPECT_EQ(got.rank, row.want.rank);
  EXPECT_EQ(got.worldSize, row.want.worldSize);
  EXPECT_EQ(got.localRank, row.want.localRank);
  EXPECT_EQ(got.localWorldSize, row.want.localWorldSize);
  EXPECT_EQ(got.nodeRank, row.want.nodeRank);
  EXPECT_EQ(got.numNodes, row.want.numNodes);
  EXPECT_EQ(got.masterAddr, row.want.masterAddr);
  EXPECT_EQ(got.masterPort, row.want.masterPort);
  EXPECT_EQ(sourceName(got.source), sourceName(row.want.source));
  EXPECT_EQ(got.restartCount, row.want.restartCount);

  for (const char* field : {"rank", "worldSize", "masterAddr"}) {
    EXPECT_EQ(row.origins.count(field), 1u) << "table row must check the origin of " << field;
  }
  for (const char* field : {"rank", "worldSize", "localRank", "localWorldSize", "nodeRank",
                            "numNodes", "masterAddr", "masterPort", "restartCount"}) {
    EXPECT_EQ(got.origins.count(field), 1u) << "no origin recorded for " << field;
  }
  for (const auto& [field, origin] : row.origins) {
    const auto it = got.origins.find(field);
    ASSERT_NE(it, got.origins.end()) << field;
    EXPECT_EQ(it->second, origin) << "origin of " << field;
  }
}

INSTANTIATE_TEST_SUITE_P(Sources, ResolveGoodTest, ::testing::ValuesIn(kGoodCases),
                         [](const auto& info) { return info.param.name; });

struct BadCase {
  std::string name;
  EnvMap env;
  std::string variable;   // EnvError::variable()
  std::string substring;  // in EnvError::what()
};

void PrintTo(const BadCase& row, std::ostream* out) { *out << row.name; }

const std::vector<BadCase> kBadCases = {
    // Integers: digits only, in range.
    {"RankNotANumber", with(kTorchrun, {{"RANK", "abc"}}), "RANK", "RANK=abc"},
    {"WorldSizeEmpty", with(kTorchrun, {{"WORLD_SIZE", ""}}), "WORLD_SIZE", "an empty value"},
    {"RankLeadingSpace", with(kTorchrun, {{"RANK", " 2"}}), "RANK", "whitespace"},
    {"RankTrailingGarbage", with(kPyTorchJob, {{"RANK", "3x"}}), "RANK",
     "not a whole decimal number"},
    {"LocalRankFraction", with(kTorchrun, {{"LOCAL_RANK", "1.5"}}), "LOCAL_RANK", "'1.5'"},
    {"RankNegative", with(kPyTorchJob, {{"RANK", "-1"}}), "RANK", "a negative number"},
    {"WorldSizeOverflowsLongLong", with(kPyTorchJob, {{"WORLD_SIZE", "99999999999999999999"}}),
     "WORLD_SIZE", "above 2147483647"},
    {"RankOverflowsInt", with(kPyTorchJob, {{"RANK", "2147483648"}}), "RANK",
     "2147483648, which is above 2147483647"},
    {"WorldSizeZero", with(kPyTorchJob, {{"WORLD_SIZE", "0"}, {"RANK", "0"}}), "WORLD_SIZE",
     "0, which is below 1"},
    // Ranks within sizes.
    {"RankNotBelowWorldSize", with(kPyTorchJob, {{"RANK", "2"}, {"PET_NODE_RANK", "2"}}), "RANK",
     "expected a value below WORLD_SIZE=2"},
    {"LocalRankNotBelowLocalWorldSize", with(kTorchrun, {{"LOCAL_RANK", "4"}}), "LOCAL_RANK",
     "below LOCAL_WORLD_SIZE=4"},
    {"LocalWorldSizeAboveWorldSize", with(kTorchrun, {{"LOCAL_WORLD_SIZE", "8"}}),
     "LOCAL_WORLD_SIZE", "at most WORLD_SIZE=4"},
    {"GroupRankNotBelowNodeCount",
     with(kTorchrun, {{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"GROUP_RANK", "2"}}), "GROUP_RANK",
     "below the node count 2"},
    // Master address.
    {"PyTorchJobWithoutMaster",
     {{"RANK", "0"}, {"WORLD_SIZE", "2"}},
     "MASTER_ADDR",
     "looked at MASTER_ADDR and PET_MASTER_ADDR"},
    {"TorchrunWithoutMaster", with(kTorchrun, {}, {"MASTER_ADDR"}), "MASTER_ADDR",
     "world size is 4 (from WORLD_SIZE)"},
    {"TrainerV2WithoutMaster", with(kTrainerV2, {}, {"PET_MASTER_ADDR"}), "PET_MASTER_ADDR",
     "(from PET_NNODES)"},
    {"MasterAddrEmpty", with(kPyTorchJob, {{"MASTER_ADDR", ""}}), "MASTER_ADDR", "an empty value"},
    {"MasterAddrWithPort", with(kTorchrun, {{"MASTER_ADDR", "node0:29500"}}), "MASTER_ADDR",
     "port in MASTER_PORT"},
    {"PetMasterAddrDisagrees", with(kPyTorchJob, {{"PET_MASTER_ADDR", "other-master-0"}}),
     "PET_MASTER_ADDR", "MASTER_ADDR=job-master-0"},
    // Master port.
    {"MasterPortZero", with(kPyTorchJob, {{"MASTER_PORT", "0"}}, {"PET_MASTER_PORT"}),
     "MASTER_PORT", "[1, 65535]"},
    {"MasterPortTooLarge", with(kTorchrun, {{"MASTER_PORT", "70000"}}), "MASTER_PORT",
     "above 65535"},
    {"MasterPortNotANumber", with(kTorchrun, {{"MASTER_PORT", "http"}}), "MASTER_PORT",
     "MASTER_PORT=http"},
    {"PetMasterPortDisagrees", with(kPyTorchJob, {{"PET_MASTER_PORT", "29500"}}), "PET_MASTER_PORT",
     "MASTER_PORT=23456"},
    {"PetMasterPortUsedAndBad", with(kTrainerV2, {{"PET_MASTER_PORT", "abc"}}), "PET_MASTER_PORT",
     "PET_MASTER_PORT=abc"},
    // Pairs.
    {"RankWithoutWorldSize", {{"RANK", "0"}}, "WORLD_SIZE", "together with RANK"},
    {"WorldSizeWithoutRank", {{"WORLD_SIZE", "2"}}, "RANK", "only WORLD_SIZE=2"},
    {"LocalRankWithoutLocalWorldSize", with(kTorchrun, {}, {"LOCAL_WORLD_SIZE"}),
     "LOCAL_WORLD_SIZE", "together with LOCAL_RANK"},
    {"LocalRankWithoutRank",
     {{"LOCAL_RANK", "0"}, {"LOCAL_WORLD_SIZE", "1"}},
     "RANK",
     "alongside LOCAL_RANK=0"},
    {"OpenMpiRankWithoutSize",
     {{"OMPI_COMM_WORLD_RANK", "0"}},
     "OMPI_COMM_WORLD_SIZE",
     "OMPI_COMM_WORLD_RANK=0"},
    {"PmiSizeWithoutRank", {{"PMI_SIZE", "2"}}, "PMI_RANK", "only PMI_SIZE=2"},
    // Processes per node and node counts.
    {"PyTorchJobNprocAboveOne",
     with(kPyTorchJob, {{"PET_NPROC_PER_NODE", "4"}, {"WORLD_SIZE", "8"}}), "PET_NPROC_PER_NODE",
     "ddprun --nproc-per-node 4"},
    {"NprocNotACount", with(kPyTorchJob, {{"PET_NPROC_PER_NODE", "banana"}}), "PET_NPROC_PER_NODE",
     "one of auto, cpu, gpu, xpu"},
    {"NprocZero", with(kTrainerV2, {{"PET_NPROC_PER_NODE", "0"}}), "PET_NPROC_PER_NODE",
     "PET_NPROC_PER_NODE=0"},
    {"TrainerV2NprocAboveOne", with(kTrainerV2, {{"PET_NPROC_PER_NODE", "8"}}),
     "PET_NPROC_PER_NODE", "ddprun --nproc-per-node 8"},
    {"TrainerV2NprocAuto", with(kTrainerV2, {{"PET_NPROC_PER_NODE", "auto"}}), "PET_NPROC_PER_NODE",
     "device count only a launcher resolves"},
    {"TrainerV2ElasticRange", with(kTrainerV2, {{"PET_NNODES", "1:4"}}), "PET_NNODES",
     "elastic range 1:4"},
    {"PyTorchJobElasticRange", with(kPyTorchJob, {{"PET_NNODES", "1:3"}}), "PET_NNODES",
     "start the program under `ddprun --rdzv-backend c10d`"},
    {"NnodesMalformedRange", with(kTrainerV2, {{"PET_NNODES", "2:x"}}), "PET_NNODES", "MIN:MAX"},
    {"TrainerV2NodeRankNotBelowNnodes", with(kTrainerV2, {{"PET_NODE_RANK", "2"}}), "PET_NODE_RANK",
     "below PET_NNODES=2"},
    // Sources that disagree.
    {"PetNodeRankDisagreesWithRank", with(kPyTorchJob, {{"PET_NODE_RANK", "0"}}), "PET_NODE_RANK",
     "same value as RANK=1"},
    {"PetNnodesDisagreesWithWorldSize", with(kPyTorchJob, {{"PET_NNODES", "3"}}), "PET_NNODES",
     "same value as WORLD_SIZE=2"},
    {"RankDisagreesWithOpenMpi", with(kOpenMpi, {{"RANK", "0"}, {"WORLD_SIZE", "2"}}), "RANK",
     "RANK=0: expected the same value as OMPI_COMM_WORLD_RANK=1"},
    {"WorldSizeDisagreesWithOpenMpi", with(kOpenMpi, {{"RANK", "1"}, {"WORLD_SIZE", "4"}}),
     "WORLD_SIZE", "WORLD_SIZE=4: expected the same value as OMPI_COMM_WORLD_SIZE=2"},
    {"RankDisagreesWithPmi",
     {{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}, {"RANK", "0"}, {"WORLD_SIZE", "2"}},
     "RANK",
     "same value as PMI_RANK=1"},
    {"PmiDisagreesWithOpenMpi", with(kOpenMpi, {{"PMI_RANK", "0"}, {"PMI_SIZE", "2"}}), "PMI_RANK",
     "PMI_RANK=0: expected the same value as OMPI_COMM_WORLD_RANK=1"},
    {"TorchrunMatchesNeitherMpiReading",
     with(kTorchrun, {{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"}}),
     "OMPI_COMM_WORLD_RANK", "mpirun started one launcher per node"},
    {"RestartCountsDisagree",
     with(kTorchrun, {{"DDPRUN_RESTART_COUNT", "1"}, {"TORCHELASTIC_RESTART_COUNT", "2"}}),
     "TORCHELASTIC_RESTART_COUNT", "same value as DDPRUN_RESTART_COUNT=1"},
    // MPI layouts.
    {"OpenMpiRankNotBelowSize",
     {{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "2"}},
     "OMPI_COMM_WORLD_RANK",
     "below OMPI_COMM_WORLD_SIZE=2"},
    {"OpenMpiLocalRankNotBelowLocalSize", with(kOpenMpi, {{"OMPI_COMM_WORLD_LOCAL_RANK", "1"}}),
     "OMPI_COMM_WORLD_LOCAL_RANK", "below OMPI_COMM_WORLD_LOCAL_SIZE=1"},
    {"PmiLocalSizeAboveSize",
     {{"PMI_RANK", "0"}, {"PMI_SIZE", "2"}, {"MPI_LOCALRANKID", "0"}, {"MPI_LOCALNRANKS", "4"}},
     "MPI_LOCALNRANKS",
     "at most PMI_SIZE=2"},
    {"RestartCountNotANumber", with(kTorchrun, {{"TORCHELASTIC_RESTART_COUNT", "x"}}),
     "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT=x"},
};

class ResolveBadTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ResolveBadTest, NamesTheVariable) {
  const BadCase& row = GetParam();
  try {
    const ClusterEnv got = resolveClusterEnv(row.env);
    FAIL() << "expected EnvError naming " << row.variable << ", resolved " << describe(got);
  } catch (const EnvError& error) {
    const std::string message = error.what();
    SCOPED_TRACE(message);
    EXPECT_EQ(error.variable(), row.variable);
    EXPECT_NE(message.find(row.substring), std::string::npos) << "missing: " << row.substring;
    // Every message says where, what was expected and what was found.
    EXPECT_EQ(message.rfind(row.variable, 0), 0u);
    EXPECT_NE(message.find(": expected "), std::string::npos);
    EXPECT_NE(message.find("; found "), std::string::npos);
    const auto value = lookup(row.env, row.variable);
    EXPECT_EQ(error.isSet(), value.has_value());
    EXPECT_EQ(error.value(), value.value_or(""));
  }
}

INSTANTIATE_TEST_SUITE_P(Rules, ResolveBadTest, ::testing::ValuesIn(kBadCases),
                         [](const auto& info) { return info.param.name; });

TEST(DescribeTest, OneKeyValueLine) {
  const ClusterEnv torchrun = resolveClusterEnv(with(kTorchrun, {{"MASTER_ADDR", "node0"}}));
  EXPECT_EQ(describe(torchrun),
            "rank=1 world_size=4 local_rank=1 local_world_size=4 node_rank=0 num_nodes=1 "
            "master=node0:29500 source=torchrun restart_count=0");

  const ClusterEnv mpi = resolveClusterEnv(kOpenMpi);
  EXPECT_EQ(describe(mpi),
            "rank=1 world_size=2 local_rank=0 local_world_size=1 node_rank=1 num_nodes=2 "
            "master=<mpi-bootstrap>:29500 source=openmpi restart_count=0");

  ClusterEnv ipv6;
  ipv6.masterAddr = "fd00::1";
  ipv6.masterPort = 1234;
  ipv6.restartCount = 3;
  EXPECT_EQ(describe(ipv6),
            "rank=0 world_size=1 local_rank=0 local_world_size=1 node_rank=0 num_nodes=1 "
            "master=[fd00::1]:1234 source=default restart_count=3");
}

TEST(SourceNameTest, EverySourceHasAName) {
  EXPECT_EQ(sourceName(EnvSource::kDefault), "default");
  EXPECT_EQ(sourceName(EnvSource::kTorchrun), "torchrun");
  EXPECT_EQ(sourceName(EnvSource::kPyTorchJob), "pytorchjob");
  EXPECT_EQ(sourceName(EnvSource::kTrainerV2), "trainer-v2");
  EXPECT_EQ(sourceName(EnvSource::kOpenMpi), "openmpi");
  EXPECT_EQ(sourceName(EnvSource::kPmi), "pmi");
}

TEST(ParseIntTest, AcceptsPlainDecimalsInRange) {
  EXPECT_EQ(parseInt("X", "0", 0, 10), 0);
  EXPECT_EQ(parseInt("X", "007", 0, 10), 7);
  EXPECT_EQ(parseInt("X", "2147483647", 0, 2147483647), 2147483647);
  EXPECT_THROW(parseInt("X", "+1", 0, 10), EnvError);
  EXPECT_THROW(parseInt("X", "11", 0, 10), EnvError);
  EXPECT_THROW(parseInt("X", "1 ", 0, 10), EnvError);
  EXPECT_THROW(parseInt("X", "0x1", 0, 10), EnvError);
}

TEST(ParseIntTest, LookupIsEmptyWhenUnset) {
  const EnvMap env = {{"PRESENT", "5"}};
  EXPECT_EQ(lookup(env, "PRESENT"), "5");
  EXPECT_EQ(lookup(env, "ABSENT"), std::nullopt);
}

TEST(CurrentEnvironmentTest, ReadsEnviron) {
  ASSERT_EQ(::setenv("DDPRUN_CLUSTER_ENV_TEST", "a=b", 1), 0);
  const EnvMap env = currentEnvironment();
  ::unsetenv("DDPRUN_CLUSTER_ENV_TEST");
  ASSERT_EQ(env.count("DDPRUN_CLUSTER_ENV_TEST"), 1u);
  EXPECT_EQ(env.at("DDPRUN_CLUSTER_ENV_TEST"), "a=b");
}

TEST(ExitCodeTest, ConfigErrorsArePermanent) {
  // 1-127 is permanent under the operators' ExitCode policy; 128+ would be retried.
  static_assert(kExitUsage >= 1 && kExitUsage <= 127);
  EXPECT_EQ(exitCodeFor(EnvError("RANK", "x", "a number", "x", "")), kExitUsage);
}

}  // namespace
}  // namespace ddp::env
