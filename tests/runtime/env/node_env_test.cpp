// resolveNodeEnv(): the node column of Note [Environment precedence], against the
// environments the operators inject, and the errors it shares with the process view.
#include "runtime/env/node_env.h"

#include <gtest/gtest.h>

#include <string>

namespace ddp::env {
namespace {

struct NodeCase {
  std::string name;
  EnvMap env;
  EnvSource source;
  int nnodes, nodeRank;
  std::optional<std::string> nproc, masterAddr;
  std::optional<std::uint16_t> masterPort;
  std::string nnodesOrigin, nodeRankOrigin;
};

void PrintTo(const NodeCase& c, std::ostream* os) { *os << c.name; }

class NodeEnvTest : public ::testing::TestWithParam<NodeCase> {};

TEST_P(NodeEnvTest, Resolves) {
  const auto& c = GetParam();
  const auto node = resolveNodeEnv(c.env);
  EXPECT_EQ(node.source, c.source);
  EXPECT_EQ(node.nnodes, c.nnodes);
  EXPECT_EQ(node.nodeRank, c.nodeRank);
  EXPECT_EQ(node.nprocPerNode, c.nproc);
  EXPECT_EQ(node.masterAddr, c.masterAddr);
  EXPECT_EQ(node.masterPort, c.masterPort);
  EXPECT_EQ(node.origins.at("nnodes"), c.nnodesOrigin);
  EXPECT_EQ(node.origins.at("nodeRank"), c.nodeRankOrigin);
}

INSTANTIATE_TEST_SUITE_P(
    Sources, NodeEnvTest,
    ::testing::Values(
        NodeCase{"Nothing", {}, EnvSource::kDefault, 1, 0, {}, {}, {}, "default", "default"},
        // PyTorchJob >= v1.7 with nprocPerNode 2: worker-1 of master + 2 workers.
        NodeCase{"PyTorchJobWithPet",
                 {{"MASTER_ADDR", "job-master-0"},
                  {"MASTER_PORT", "23456"},
                  {"WORLD_SIZE", "6"},
                  {"RANK", "2"},
                  {"PET_NODE_RANK", "2"},
                  {"PET_NNODES", "3"},
                  {"PET_NPROC_PER_NODE", "2"},
                  {"PET_MASTER_ADDR", "job-master-0"},
                  {"PET_MASTER_PORT", "23456"}},
                 EnvSource::kPyTorchJob,
                 3,
                 2,
                 "2",
                 "job-master-0",
                 23456,
                 "PET_NNODES",
                 "PET_NODE_RANK"},
        NodeCase{
            "PyTorchJobBeforeV17",
            {{"MASTER_ADDR", "m"}, {"MASTER_PORT", "23456"}, {"WORLD_SIZE", "4"}, {"RANK", "3"}},
            EnvSource::kPyTorchJob,
            4,
            3,
            {},
            "m",
            23456,
            "WORLD_SIZE",
            "RANK"},
        NodeCase{"TrainerV2",
                 {{"PET_NNODES", "2"},
                  {"PET_NPROC_PER_NODE", "auto"},
                  {"PET_NODE_RANK", "1"},
                  {"PET_MASTER_ADDR", "tj-node-0-0.tj"},
                  {"PET_MASTER_PORT", "29500"}},
                 EnvSource::kTrainerV2,
                 2,
                 1,
                 "auto",
                 "tj-node-0-0.tj",
                 29500,
                 "PET_NNODES",
                 "PET_NODE_RANK"},
        NodeCase{"OpenMpiOneLauncherPerNode",
                 {{"OMPI_COMM_WORLD_RANK", "1"},
                  {"OMPI_COMM_WORLD_SIZE", "2"},
                  {"MASTER_ADDR", "w0.job"}},
                 EnvSource::kOpenMpi,
                 2,
                 1,
                 {},
                 "w0.job",
                 {},
                 "OMPI_COMM_WORLD_SIZE",
                 "OMPI_COMM_WORLD_RANK"},
        NodeCase{"HydraPmiId",
                 {{"PMI_ID", "0"}, {"PMI_SIZE", "1"}},
                 EnvSource::kPmi,
                 1,
                 0,
                 {},
                 {},
                 {},
                 "PMI_SIZE",
                 "PMI_ID"}));

struct BadNodeCase {
  std::string name;
  EnvMap env;
  std::string variable;  // the variable the error must name
  std::string message;   // a part of what it says
};

void PrintTo(const BadNodeCase& c, std::ostream* os) { *os << c.name; }

class BadNodeEnvTest : public ::testing::TestWithParam<BadNodeCase> {};

TEST_P(BadNodeEnvTest, NamesTheVariable) {
  const auto& c = GetParam();
  try {
    resolveNodeEnv(c.env);
    FAIL() << "expected an EnvError naming " << c.variable;
  } catch (const EnvError& e) {
    EXPECT_EQ(e.variable(), c.variable) << e.what();
    EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
    EXPECT_EQ(exitCodeFor(e), kExitUsage);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Errors, BadNodeEnvTest,
    ::testing::Values(
        BadNodeCase{"InsideAWorker", {{"LOCAL_RANK", "0"}}, "LOCAL_RANK", "another launcher's"},
        BadNodeCase{"MasterAddrWithPort",
                    {{"MASTER_ADDR", "m:1"}},
                    "MASTER_ADDR",
                    "expected a host without a port; found host:port"},
        BadNodeCase{"MasterAddrWithSpace", {{"MASTER_ADDR", " m"}}, "MASTER_ADDR", "whitespace"},
        BadNodeCase{
            "PetMasterAddrEmpty", {{"PET_MASTER_ADDR", ""}}, "PET_MASTER_ADDR", "an empty value"},
        BadNodeCase{"MasterHostsDisagree",
                    {{"MASTER_ADDR", "a"}, {"PET_MASTER_ADDR", "b"}},
                    "PET_MASTER_ADDR",
                    "the same host as MASTER_ADDR=a"},
        BadNodeCase{"PortNotANumber",
                    {{"MASTER_PORT", "http"}},
                    "MASTER_PORT",
                    "expected a decimal integer in [1, 65535]; found 'http'"},
        BadNodeCase{"RankWithoutWorldSize", {{"RANK", "0"}}, "WORLD_SIZE", "(unset)"},
        BadNodeCase{"RankBeyondWorld",
                    {{"RANK", "4"}, {"WORLD_SIZE", "4"}},
                    "RANK",
                    "a value below WORLD_SIZE=4"},
        BadNodeCase{"PetNodeRankDisagrees",
                    {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"PET_NODE_RANK", "0"}},
                    "PET_NODE_RANK",
                    "the same value as RANK=1"},
        BadNodeCase{
            "WorldSizeNotNodesTimesProcs",
            {{"RANK", "0"}, {"WORLD_SIZE", "4"}, {"PET_NNODES", "2"}, {"PET_NPROC_PER_NODE", "3"}},
            "WORLD_SIZE",
            "PET_NNODES x nprocPerNode = 2 x 3"},
        BadNodeCase{"TrainerV2NodeBeyondNodes",
                    {{"PET_NNODES", "2"}, {"PET_NODE_RANK", "2"}},
                    "PET_NODE_RANK",
                    "below the node count 2"},
        BadNodeCase{
            "ElasticRangeUpsideDown", {{"PET_NNODES", "4:1"}}, "PET_NNODES", "1 <= MIN <= MAX"},
        BadNodeCase{"BadNproc",
                    {{"PET_NPROC_PER_NODE", "many"}},
                    "PET_NPROC_PER_NODE",
                    "a process count >= 1"},
        BadNodeCase{"OmpiHalf", {{"OMPI_COMM_WORLD_RANK", "0"}}, "OMPI_COMM_WORLD_SIZE", "(unset)"},
        // The process view refuses these half pairs; a launcher that let them pass started
        // workers that all refused them (found by tests/runtime/env/node_env_fuzz_test.cpp).
        BadNodeCase{"OmpiLocalHalf",
                    {{"OMPI_COMM_WORLD_LOCAL_RANK", "1"}},
                    "OMPI_COMM_WORLD_LOCAL_SIZE",
                    "to be set together with OMPI_COMM_WORLD_LOCAL_RANK"},
        BadNodeCase{"MpichLocalHalf",
                    {{"PMI_RANK", "0"}, {"PMI_SIZE", "2"}, {"MPI_LOCALNRANKS", "1"}},
                    "MPI_LOCALRANKID",
                    "to be set together with MPI_LOCALNRANKS"}));

// The process view reads MASTER_ADDR with the same reader: the same value, the same error.
// An elastic PyTorchJob (PET_NNODES=MIN:MAX, no RANK): MIN nodes, MAX kept for the c10d
// rendezvous that assigns the node ranks.
TEST(NodeEnvTest, ReadsAnElasticRangeAsMinAndMax) {
  const auto node = resolveNodeEnv({{"PET_NNODES", "2:3"}, {"PET_NPROC_PER_NODE", "1"}});
  EXPECT_EQ(node.nnodes, 2);
  EXPECT_EQ(node.maxNodes, 3);
  EXPECT_EQ(node.origins.at("nnodes"), "PET_NNODES");
  EXPECT_FALSE(resolveNodeEnv({{"PET_NNODES", "2:2"}}).maxNodes.has_value());
}

TEST(NodeEnvTest, SharesTheMasterReaderWithTheProcessView) {
  const EnvMap env{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "m:1"}};
  std::string nodeError, processError;
  try {
    resolveNodeEnv(env);
  } catch (const EnvError& e) {
    nodeError = e.what();
  }
  try {
    resolveClusterEnv(env);
  } catch (const EnvError& e) {
    processError = e.what();
  }
  EXPECT_FALSE(nodeError.empty());
  EXPECT_EQ(nodeError, processError);
}

}  // namespace
}  // namespace ddp::env
