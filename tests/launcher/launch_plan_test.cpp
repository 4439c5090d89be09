// resolveLaunchPlan over readLaunchCommand, as ddprun runs them: every environment source
// and flag, and every way they can be wrong.
#include "launcher/launch_plan.h"

#include "launcher/launch_flags.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

namespace ddp::launcher {
namespace {

using env::EnvMap;

// The command line's flags (name -> text) over `env`, as ddprun's main resolves them.
LaunchPlan plan(const GivenFlags& flags, const EnvMap& env, const DeviceCounts& devices) {
  return resolveLaunchPlan(readLaunchCommand(flags, env).plan, env, devices);
}

struct PlanCase {
  std::string name;
  EnvMap env;
  GivenFlags flags;
  // Expected plan.
  std::string source;
  int nnodes, nodeRank, nproc;
  std::string masterAddr;
  int masterPort;
  int maxRestarts = 0;
};

void PrintTo(const PlanCase& c, std::ostream* os) { *os << c.name; }

class PlanTest : public ::testing::TestWithParam<PlanCase> {};

TEST_P(PlanTest, Resolves) {
  const auto& c = GetParam();
  const auto plan = ddp::launcher::plan(c.flags, c.env, DeviceCounts{.gpus = 0, .cpus = 8});
  EXPECT_EQ(plan.source, c.source);
  EXPECT_EQ(plan.nnodes, c.nnodes);
  EXPECT_EQ(plan.nodeRank, c.nodeRank);
  EXPECT_EQ(plan.nprocPerNode, c.nproc);
  EXPECT_EQ(plan.masterAddr, c.masterAddr);
  EXPECT_EQ(plan.masterPort, c.masterPort);
  EXPECT_EQ(plan.maxRestarts, c.maxRestarts);
  EXPECT_EQ(plan.worldSize(), c.nnodes * c.nproc);
}

GivenFlags nproc(const std::string& n) { return {{"nproc-per-node", n}}; }

INSTANTIATE_TEST_SUITE_P(
    Sources, PlanTest,
    ::testing::Values(
        PlanCase{"NothingSet", {}, {}, "default", 1, 0, 1, "127.0.0.1", 29500},
        PlanCase{"FlagsOnly",
                 {},
                 {{"nproc-per-node", "2"},
                  {"nnodes", "3"},
                  {"node-rank", "1"},
                  {"master-addr", "node0"},
                  {"master-port", "1234"},
                  {"max-restarts", "4"}},
                 "flags",
                 3,
                 1,
                 2,
                 "node0",
                 1234,
                 4},
        // PyTorchJob >= v1.7, nprocPerNode: 2, worker-1 of master + 2 workers (3 pods).
        PlanCase{"PyTorchJobWithPet",
                 {{"MASTER_ADDR", "job-master-0"},
                  {"MASTER_PORT", "23456"},
                  {"WORLD_SIZE", "6"},
                  {"RANK", "2"},
                  {"PET_NODE_RANK", "2"},
                  {"PET_NNODES", "3"},
                  {"PET_NPROC_PER_NODE", "2"},
                  {"PET_MASTER_ADDR", "job-master-0"},
                  {"PET_MASTER_PORT", "23456"},
                  {"PYTHONUNBUFFERED", "1"}},
                 {},
                 "pytorchjob",
                 3,
                 2,
                 2,
                 "job-master-0",
                 23456},
        // The operator counts nprocPerNode "auto" as 1 in WORLD_SIZE; no GPU here -> 1.
        PlanCase{"PyTorchJobAutoNproc",
                 {{"MASTER_ADDR", "job-master-0"},
                  {"MASTER_PORT", "23456"},
                  {"WORLD_SIZE", "2"},
                  {"RANK", "0"},
                  {"PET_NODE_RANK", "0"},
                  {"PET_NNODES", "2"},
                  {"PET_NPROC_PER_NODE", "auto"}},
                 {},
                 "pytorchjob",
                 2,
                 0,
                 1,
                 "job-master-0",
                 23456},
        // Operators before v1.7: RANK/WORLD_SIZE count pods; nproc from the flag.
        PlanCase{"PyTorchJobBeforeV17",
                 {{"MASTER_ADDR", "job-master-0"},
                  {"MASTER_PORT", "23456"},
                  {"WORLD_SIZE", "4"},
                  {"RANK", "3"}},
                 nproc("2"),
                 "pytorchjob",
                 4,
                 3,
                 2,
                 "job-master-0",
                 23456},
        PlanCase{"TrainerV2",
                 {{"PET_NNODES", "2"},
                  {"PET_NPROC_PER_NODE", "3"},
                  {"PET_NODE_RANK", "1"},
                  {"PET_MASTER_ADDR", "tj-node-0-0.tj"},
                  {"PET_MASTER_PORT", "29500"}},
                 {},
                 "trainer-v2",
                 2,
                 1,
                 3,
                 "tj-node-0-0.tj",
                 29500},
        PlanCase{"TrainerV2CpuCount",
                 {{"PET_NNODES", "1"},
                  {"PET_NPROC_PER_NODE", "cpu"},
                  {"PET_NODE_RANK", "0"},
                  {"PET_MASTER_ADDR", "tj-node-0-0.tj"},
                  {"PET_MASTER_PORT", "29500"}},
                 {},
                 "trainer-v2",
                 1,
                 0,
                 8,
                 "tj-node-0-0.tj",
                 29500},
        PlanCase{"ElasticFixedRangeAndRestarts",
                 {{"PET_NNODES", "2:2"},
                  {"PET_NODE_RANK", "0"},
                  {"PET_MAX_RESTARTS", "3"},
                  {"PET_MASTER_ADDR", "m"},
                  {"PET_MASTER_PORT", "29400"}},
                 {},
                 "trainer-v2",
                 2,
                 0,
                 1,
                 "m",
                 29400,
                 3},
        PlanCase{"OpenMpiOneLauncherPerNode",
                 {{"OMPI_COMM_WORLD_RANK", "1"},
                  {"OMPI_COMM_WORLD_SIZE", "2"},
                  {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                  {"OMPI_COMM_WORLD_LOCAL_SIZE", "1"},  // mpirun sets both
                  {"MASTER_ADDR", "w0.job"}},
                 nproc("4"),
                 "openmpi",
                 2,
                 1,
                 4,
                 "w0.job",
                 29500},
        PlanCase{"PmiSingleNodeNeedsNoMaster",
                 {{"PMI_RANK", "0"}, {"PMI_SIZE", "1"}},
                 {},
                 "pmi",
                 1,
                 0,
                 1,
                 "127.0.0.1",
                 29500},
        PlanCase{"FlagsWinOverEnv",
                 {{"PET_NNODES", "2"},
                  {"PET_NODE_RANK", "1"},
                  {"PET_NPROC_PER_NODE", "4"},
                  {"PET_MASTER_ADDR", "m"},
                  {"PET_MASTER_PORT", "29500"}},
                 {{"nproc-per-node", "1"}, {"master-port", "40000"}, {"max-restarts", "1"}},
                 "trainer-v2",
                 2,
                 1,
                 1,
                 "m",
                 40000,
                 1},
        // A flag leaves its variables unread, so a stale one cannot fail the launch.
        PlanCase{"FlagsLeaveTheirVariablesUnread",
                 {{"MASTER_ADDR", ""},
                  {"MASTER_PORT", "1"},
                  {"PET_MASTER_PORT", "2"},
                  {"PET_NPROC_PER_NODE", "many"}},
                 {{"master-addr", "h"}, {"master-port", "3000"}, {"nproc-per-node", "2"}},
                 "trainer-v2",
                 1,
                 0,
                 2,
                 "h",
                 3000},
        PlanCase{"StandaloneLeavesTheMasterVariablesUnread",
                 {{"MASTER_PORT", "1"}, {"PET_MASTER_PORT", "2"}},
                 {{"standalone", ""}},
                 "default",
                 1,
                 0,
                 1,
                 "127.0.0.1",
                 0},
        // The operator's empty PET_STANDALONE means true.
        PlanCase{"PetStandaloneEmptyIsTrue",
                 {{"PET_STANDALONE", ""}, {"PET_NPROC_PER_NODE", "2"}},
                 {},
                 "trainer-v2",
                 1,
                 0,
                 2,
                 "127.0.0.1",
                 0}));

TEST(PlanTest, AutoIsOneWorkerPerVisibleGpu) {
  EXPECT_EQ(plan(nproc("auto"), {}, DeviceCounts{.gpus = 4, .cpus = 2}).nprocPerNode, 4);
  EXPECT_EQ(plan(nproc("gpu"), {}, DeviceCounts{.gpus = 2}).nprocPerNode, 2);
}

TEST(PlanTest, DetectsGpusFromCudaVisibleDevices) {
  EXPECT_EQ(detectDevices({{"CUDA_VISIBLE_DEVICES", "0,1,3"}}).gpus, 3);
  EXPECT_EQ(detectDevices({{"CUDA_VISIBLE_DEVICES", ""}}).gpus, 0);
  EXPECT_GE(detectDevices({}).cpus, 1);
}

// A /dev of a container: the device files the NVIDIA container toolkit put there.
class FakeDevDir {
 public:
  explicit FakeDevDir(std::initializer_list<std::string> names)
      : dir_(std::filesystem::temp_directory_path() /
             ("ddprun-dev-" + std::to_string(getpid()) + "-" + std::to_string(next_++))) {
    std::filesystem::create_directories(dir_);
    for (const auto& name : names) std::ofstream(dir_ / name).put('\n');
  }
  ~FakeDevDir() { std::filesystem::remove_all(dir_); }
  GpuProbe probe() const { return GpuProbe{.askDriver = false, .devDir = dir_.string()}; }

 private:
  static inline int next_ = 0;
  std::filesystem::path dir_;
};

CudaDriverCount driverWithThree() { return {.loaded = true, .status = 0, .count = 3}; }
CudaDriverCount driverTooOld() {
  return {.loaded = true, .status = 803, .count = 0, .error = "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"};
}

// Note [Counting GPUs]: the toolkit keeps the host's numbers, /dev/nvidia4..7 on GPUs 4-7.
TEST(PlanTest, CountsGpusWhoseDeviceNumbersDoNotStartAtZero) {
  const FakeDevDir dev({"nvidia4", "nvidia5", "nvidia6", "nvidia7", "nvidiactl", "nvidia-uvm"});
  const auto counts = detectDevices({}, dev.probe());
  EXPECT_EQ(counts.gpus, 4);
  EXPECT_EQ(plan(nproc("auto"), {}, counts).nprocPerNode, 4);
  EXPECT_EQ(counts.gpuWarning, "");
}

TEST(PlanTest, TheDevicePluginsListCountsWhereNoDriverAnswers) {
  const FakeDevDir dev({});
  EXPECT_EQ(detectDevices({{"NVIDIA_VISIBLE_DEVICES", "GPU-1a2b,GPU-3c4d"}}, dev.probe()).gpus, 2);
  // "all" says nothing about how many: the device files do.
  const FakeDevDir two({"nvidia0", "nvidia1", "nvidiactl"});
  EXPECT_EQ(detectDevices({{"NVIDIA_VISIBLE_DEVICES", "all"}}, two.probe()).gpus, 2);
}

TEST(PlanTest, TheCudaDriversCountWinsWhenAsked) {
  const FakeDevDir dev({"nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl"});
  auto probe = dev.probe();
  probe.askDriver = true;
  probe.driverCount = driverWithThree;
  const auto counts = detectDevices({{"CUDA_VISIBLE_DEVICES", "0,1,2,3"}}, probe);
  EXPECT_EQ(counts.gpus, 3);
  EXPECT_EQ(counts.gpuSource, "the CUDA driver");
}

TEST(PlanTest, AGpuPodWithoutAUsableGpuIsWarnedAboutNotCountedSilently) {
  const FakeDevDir dev({"nvidiactl"});
  auto probe = dev.probe();
  probe.askDriver = true;
  probe.driverCount = driverTooOld;
  const auto counts = detectDevices({{"NVIDIA_VISIBLE_DEVICES", "GPU-1a2b"}}, probe);
  EXPECT_EQ(counts.gpus, 1);  // the device plugin's list still counts: the warning says more
  EXPECT_NE(counts.gpuWarning.find("CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"), std::string::npos)
      << counts.gpuWarning;
  const auto none = detectDevices({}, probe);
  EXPECT_EQ(none.gpus, 0);
  EXPECT_NE(none.gpuWarning.find("this looks like a GPU pod (" + probe.devDir +
                                 "/nvidiactl exists), but no GPU can be used: the CUDA driver "
                                 "reports CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"),
            std::string::npos)
      << none.gpuWarning;
  // A CPU pod: nothing to warn about.
  const FakeDevDir cpuPod({"null", "zero"});
  EXPECT_EQ(detectDevices({}, cpuPod.probe()).gpuWarning, "");
}

// This machine has no driver: asking it changes nothing.
TEST(PlanTest, WithoutALibcudaTheDriverIsNotLoaded) {
  if (std::filesystem::exists("/dev/nvidiactl")) GTEST_SKIP() << "this machine has a GPU";
  EXPECT_FALSE(countGpusWithCudaDriver().loaded);
}

struct BadCase {
  std::string name;
  EnvMap env;
  GivenFlags flags;
  std::string message;  // a part of what the error says
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class BadPlanTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadPlanTest, IsRefusedWithACause) {
  const auto& c = GetParam();
  try {
    plan(c.flags, c.env, DeviceCounts{.gpus = 0, .cpus = 2});
    FAIL() << "expected an error containing: " << c.message;
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Errors, BadPlanTest,
    ::testing::Values(
        BadCase{"InsideAWorker", {{"LOCAL_RANK", "0"}}, {}, "inside another launcher's worker"},
        BadCase{"RankWithoutWorldSize", {{"RANK", "0"}}, {}, "WORLD_SIZE (unset)"},
        BadCase{"NonNumericRank", {{"RANK", "x"}, {"WORLD_SIZE", "2"}}, {}, "RANK=x"},
        BadCase{"RankAtLeastNodes",
                {{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "m"}},
                {},
                "RANK=2: expected a value below WORLD_SIZE=2"},
        BadCase{"PetNodeRankDisagrees",
                {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"PET_NODE_RANK", "0"}, {"MASTER_ADDR", "m"}},
                {},
                "PET_NODE_RANK=0"},
        BadCase{"WorldSizeNotNnodesTimesNproc",
                {{"RANK", "0"},
                 {"WORLD_SIZE", "4"},
                 {"PET_NNODES", "2"},
                 {"PET_NPROC_PER_NODE", "3"},
                 {"MASTER_ADDR", "m"}},
                {},
                "PET_NNODES x nprocPerNode = 2 x 3"},
        BadCase{"ElasticRangeWithoutC10d",
                {{"PET_NNODES", "1:4"}},
                {},
                "nnodes 1:4 (from PET_NNODES) is an elastic range, and the static rendezvous"},
        BadCase{"ManyNodesNoMaster",
                {{"PET_NNODES", "2"}, {"PET_NODE_RANK", "0"}},
                {},
                "MASTER_ADDR (unset)"},
        BadCase{"MpiManyNodesNoMaster",
                {{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}},
                {},
                "mpirun -x MASTER_ADDR"},
        BadCase{"MpiHalf", {{"OMPI_COMM_WORLD_RANK", "0"}}, {}, "OMPI_COMM_WORLD_SIZE"},
        BadCase{"MasterAddrsDisagree",
                {{"MASTER_ADDR", "a"}, {"PET_MASTER_ADDR", "b"}},
                {},
                "PET_MASTER_ADDR=b"},
        BadCase{"MasterPortsDisagree",
                {{"MASTER_PORT", "1"}, {"PET_MASTER_PORT", "2"}},
                {},
                "PET_MASTER_PORT=2"},
        BadCase{"PortOutOfRange", {{"MASTER_PORT", "70000"}}, {}, "MASTER_PORT=70000"},
        BadCase{"BadPetNproc", {{"PET_NPROC_PER_NODE", "many"}}, {}, "PET_NPROC_PER_NODE=many"},
        BadCase{"BadNprocFlag", {}, nproc("0"), "--nproc-per-node=0"},
        BadCase{"GpuWithoutGpus", {}, nproc("gpu"), "no usable GPU"},
        BadCase{"BadPetStandalone", {{"PET_STANDALONE", "yes"}}, {}, "PET_STANDALONE=yes"},
        // The launcher once let these pass and every worker then failed on them.
        BadCase{"MasterAddrWithPort",
                {{"MASTER_ADDR", "m:29500"}},
                {},
                "MASTER_ADDR=m:29500: expected a host without a port; found host:port"},
        BadCase{"PetMasterAddrWithSpaces",
                {{"PET_MASTER_ADDR", "m 1"}, {"PET_NNODES", "2"}},
                {},
                "PET_MASTER_ADDR=m 1: expected the host name or IP address of rank 0; found "
                "whitespace"},
        BadCase{"ElasticRangeFlagWithoutC10d",
                {},
                {{"nnodes", "1:4"}},
                "nnodes 1:4 (from --nnodes) is an elastic range, and the static rendezvous"},
        BadCase{"ElasticRangeUpsideDown", {}, {{"nnodes", "4:1"}}, "MIN:MAX with MIN <= MAX"},
        BadCase{"C10dWithoutEndpoint",
                {},
                {{"rdzv-backend", "c10d"}},
                "--rdzv-backend c10d needs --rdzv-endpoint HOST:PORT"},
        BadCase{"EtcdBackend",
                {{"PET_RDZV_BACKEND", "etcd"}},
                {},
                "PET_RDZV_BACKEND=etcd: expected static or c10d"},
        BadCase{"UnknownRdzvConfKey",
                {},
                {{"rdzv-backend", "c10d"}, {"rdzv-endpoint", "n0"}, {"rdzv-conf", "lastcall=5"}},
                "the unknown key 'lastcall'"},
        BadCase{"BadMaxRestartsVariable",
                {{"PET_MAX_RESTARTS", "many"}},
                {},
                "PET_MAX_RESTARTS=many: expected a decimal integer in [0, 1000]"},
        BadCase{"BadPortFlag",
                {},
                {{"master-port", "0x10"}},
                "--master-port=0x10: expected a decimal integer in [1, 65535]; found '0x10'"},
        BadCase{"RedirectsNotTorchrunsSyntax", {}, {{"redirects", "0:4"}}, "found '0:4'"},
        BadCase{"TeeNotTorchrunsSyntax", {{"PET_TEE", "both"}}, {}, "PET_TEE=both: expected 0"},
        BadCase{"MasterAddrFlagWithPort",
                {},
                {{"master-addr", "m:29500"}},
                "--master-addr=m:29500: expected a host without a port; found host:port. Put "
                "the host in --master-addr and the port in --master-port."},
        BadCase{"VariableErrorsSayWhereToFixThem",
                {{"PET_MAX_RESTARTS", "x"}},
                {},
                "Fix PET_MAX_RESTARTS where it is set (pod spec or shell), or pass the flag."},
        BadCase{"StandaloneWithNodes",
                {},
                {{"nnodes", "2"}, {"standalone", ""}},
                "--standalone runs one node"},
        // Every worker would refuse these: its GROUP_RANK/GROUP_WORLD_SIZE must match what
        // mpirun told its launcher (found by tests/launcher/launch_flags_fuzz_test.cpp).
        BadCase{"NodeRankFlagContradictsMpi",
                {{"PMI_RANK", "0"}, {"PMI_SIZE", "2"}, {"MASTER_ADDR", "m"}},
                {{"node-rank", "1"}},
                "--node-rank=1: expected the node rank mpirun gives this launcher, PMI_RANK=0; "
                "found 1. Drop --node-rank"},
        BadCase{
            "NnodesFlagContradictsMpi",
            {{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"MASTER_ADDR", "m"}},
            {{"nnodes", "3"}},
            "--nnodes=3: expected the node count mpirun gives this launcher, "
            "OMPI_COMM_WORLD_SIZE=2; found 3"},
        BadCase{"NodeRankFlagTooHigh",
                {},
                {{"nnodes", "2"}, {"node-rank", "2"}, {"master-addr", "m"}},
                "node rank 2 (from --node-rank) must be below the node count 2 (from --nnodes)"}));

TEST(WorkerEnvironmentTest, HasTorchrunVariablesAndOptions) {
  LaunchPlan plan;
  plan.nnodes = 2;
  plan.nodeRank = 1;
  plan.nprocPerNode = 3;
  plan.masterAddr = "m";
  plan.masterPort = 4000;
  plan.maxRestarts = 5;
  const auto env = workerEnvironment(plan, 2,
                                     WorkerEnvOptions{.restartCount = 1,
                                                      .ompNumThreads = 4,
                                                      .backend = "gloo",
                                                      .rendezvousTimeoutSeconds = 60,
                                                      .hangTimeoutSeconds = 90,
                                                      .attemptLogDir = "/logs/none_x/attempt_1"});
  const std::map<std::string, std::string> expected{
      {"RANK", "5"},
      {"LOCAL_RANK", "2"},
      {"WORLD_SIZE", "6"},
      {"LOCAL_WORLD_SIZE", "3"},
      {"GROUP_RANK", "1"},
      {"GROUP_WORLD_SIZE", "2"},
      {"ROLE_NAME", "default"},
      {"ROLE_RANK", "5"},
      {"ROLE_WORLD_SIZE", "6"},
      {"MASTER_ADDR", "m"},
      {"MASTER_PORT", "4000"},
      {"TORCHELASTIC_RESTART_COUNT", "1"},
      {"TORCHELASTIC_MAX_RESTARTS", "5"},
      {"TORCHELASTIC_RUN_ID", "none"},
      {"DDPRUN_RESTART_COUNT", "1"},
      {"OMP_NUM_THREADS", "4"},
      {"DDPRUN_BACKEND", "gloo"},
      {"DDPRUN_RDZV_TIMEOUT", "60"},
      {"TORCHELASTIC_ERROR_FILE", "/logs/none_x/attempt_1/2/error.json"},
      {"DDPRUN_HEARTBEAT_FILE", "/logs/none_x/attempt_1/2/heartbeat.json"},
      {"DDPRUN_HANG_TIMEOUT", "90"},
      {"PYTHONUNBUFFERED", "1"}};
  EXPECT_EQ(env, expected);
}

// A PYTHONUNBUFFERED of the user's (the launcher's environment) is inherited, not replaced.
TEST(WorkerEnvironmentTest, PythonUnbufferedUnlessTheUserSetIt) {
  const LaunchPlan plan;
  EXPECT_EQ(workerEnvironment(plan, 0, {}).at("PYTHONUNBUFFERED"), "1");
  EXPECT_EQ(workerEnvironment(plan, 0, {.pythonUnbuffered = false}).count("PYTHONUNBUFFERED"), 0u);
  EXPECT_EQ(workerEnvironment(plan, 0, {}).count("TORCHELASTIC_ERROR_FILE"), 0u);  // no log dir
}

TEST(WorkerEnvironmentTest, RoleAndVirtualLocalRankAsTorchrunSetsThem) {
  LaunchPlan plan;
  plan.nprocPerNode = 2;
  const WorkerEnvOptions options{.role = "trainer", .virtualLocalRank = true};
  const auto second = workerEnvironment(plan, 1, options);
  EXPECT_EQ(second.at("ROLE_NAME"), "trainer");
  EXPECT_EQ(second.at("RANK"), "1");
  EXPECT_EQ(second.at("LOCAL_RANK"), "0");
  EXPECT_EQ(second.at("CUDA_VISIBLE_DEVICES"), "1");  // its local rank without a launcher list
  auto fromList = options;
  fromList.visibleDevices = "3,6";
  EXPECT_EQ(workerEnvironment(plan, 1, fromList).at("CUDA_VISIBLE_DEVICES"), "6");
  EXPECT_EQ(workerEnvironment(plan, 1, {}).count("CUDA_VISIBLE_DEVICES"), 0u);
  fromList.visibleDevices = "3";
  EXPECT_THROW(checkVirtualLocalRanks(plan, fromList), LaunchError);
}

TEST(DescribePlanJsonTest, ListsEveryWorkerOnce) {
  LaunchPlan plan;
  plan.nnodes = 2;
  plan.nodeRank = 1;
  plan.nprocPerNode = 2;
  const WorkerProgram program{ProgramKind::kPythonScript, {"python3", "-u", "t.py"}, "a .py file"};
  const auto json = nlohmann::json::parse(describePlanJson(plan, program, {}));
  EXPECT_EQ(json["worldSize"], 4);
  EXPECT_EQ(json["program"], nlohmann::json::array({"python3", "-u", "t.py"}));
  EXPECT_EQ(json["programKind"], "python-script");
  EXPECT_EQ(json["programReason"], "a .py file");
  ASSERT_EQ(json["workers"].size(), 2u);
  EXPECT_EQ(json["workers"][0]["rank"], 2);
  EXPECT_EQ(json["workers"][1]["env"]["RANK"], "3");
  EXPECT_EQ(json["workers"][1]["env"]["LOCAL_RANK"], "1");
}

// An elastic PyTorchJob's environment (training-operator elastic.go): the c10d plan, with
// node rank and master left to the rendezvous.
TEST(ElasticPlanTest, ThePyTorchJobElasticEnvironmentPlansAC10dRendezvous) {
  const EnvMap env{
      {"PET_RDZV_BACKEND", "c10d"}, {"PET_RDZV_ENDPOINT", "job-worker-0:23456"},
      {"PET_RDZV_ID", "job"},       {"PET_RDZV_CONF", "last_call_timeout=5,join_timeout=60"},
      {"PET_NNODES", "2:3"},        {"PET_MAX_RESTARTS", "3"},
      {"PET_NPROC_PER_NODE", "2"}};
  const auto command = readLaunchCommand({}, env);
  ASSERT_TRUE(command.rendezvous.has_value());
  EXPECT_EQ(command.rendezvous->endpoint(), "job-worker-0:23456");
  EXPECT_EQ(command.rendezvous->runId, "job");
  EXPECT_EQ(command.rendezvous->lastCallTimeout, std::chrono::seconds(5));
  EXPECT_EQ(command.rendezvous->joinTimeout, std::chrono::seconds(60));
  const auto p = resolveLaunchPlan(command.plan, env, DeviceCounts{.gpus = 0, .cpus = 2});
  EXPECT_EQ(p.rendezvousBackend, "c10d");
  EXPECT_EQ(p.nnodes, 2);
  EXPECT_EQ(p.maxNodes, 3);
  EXPECT_EQ(p.nprocPerNode, 2);
  EXPECT_EQ(p.maxRestarts, 3);
  EXPECT_EQ(p.origins.at("nodeRank"), "rendezvous");
  EXPECT_EQ(p.origins.at("masterAddr"), "rendezvous");
  EXPECT_EQ(workerEnvironment(p, 0, {}).at("TORCHELASTIC_RUN_ID"), "job");
}

TEST(ElasticPlanTest, TheStaticBackendTakesItsMasterFromTheEndpoint) {
  const auto command = readLaunchCommand({{"rdzv-endpoint", "n0:1234"}}, {});
  EXPECT_EQ(command.plan.masterAddr, "n0");
  EXPECT_EQ(command.plan.masterPort, 1234);
  EXPECT_FALSE(command.rendezvous.has_value());
}

TEST(ElasticPlanTest, ARoundsRanksFollowItsFirstRankAndWorldSize) {
  LaunchPlan p;
  p.nprocPerNode = 2;
  p.firstGlobalRank = 3;  // the nodes before this one run 3 workers in all
  p.totalWorkers = 7;
  EXPECT_EQ(p.globalRank(1), 4);
  EXPECT_EQ(workerEnvironment(p, 1, {}).at("WORLD_SIZE"), "7");
}

}  // namespace
}  // namespace ddp::launcher
