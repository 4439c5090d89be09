// readLaunchCommand and resolveLaunchPlan under random flags and environments
// (tests/support/fuzz.h): every launch is planned or refused with a PermanentError, and a
// planned launch gives workers an environment that resolves to the ranks it planned.
#include "launcher/launch_flags.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "launcher/launch_plan.h"
#include "tests/support/env_corpus.h"
#include "tests/support/fuzz.h"

namespace ddp::launcher {
namespace {

namespace fuzz = ddp::testing::fuzz;

// "--name=value" and "--name" lines are flags (canonical names), the rest the environment.
std::pair<GivenFlags, env::EnvMap> commandOf(const std::string& input) {
  GivenFlags given;
  std::string environment;
  for (const auto& [name, value] : fuzz::environmentOf(input)) {
    if (name.rfind("--", 0) == 0) {
      given[name.substr(2)] = value;
    } else {
      environment += name + "=" + value + "\n";
    }
  }
  return {given, fuzz::environmentOf(environment)};
}

// The launch, then the environment of its first and last worker, resolved as the worker
// resolves it: the launcher must not start a worker that cannot know its rank.
void planAndCheckWorkers(const std::string& input) {
  const auto [given, environment] = commandOf(input);
  const LaunchCommand command = readLaunchCommand(given, environment);
  const DeviceCounts devices{static_cast<int>(input.size() % 3),
                             1 + static_cast<int>(input.size() % 5)};
  LaunchPlan plan = resolveLaunchPlan(command.plan, environment, devices);
  if (plan.standalone && plan.masterPort == 0) plan.masterPort = 29500;  // main: a free port
  WorkerEnvOptions options;
  options.backend = command.backend;
  options.rendezvousTimeoutSeconds = command.rendezvousTimeoutSeconds;
  for (const int localRank : {0, plan.nprocPerNode - 1}) {
    auto worker = environment;
    for (const auto& [name, value] : workerEnvironment(plan, localRank, options)) {
      worker[name] = value;
    }
    env::ClusterEnv resolved;
    try {
      resolved = env::resolveClusterEnv(worker);
    } catch (const env::EnvError& e) {
      throw std::logic_error(std::string("the launch was planned, but its worker refuses its "
                                         "environment: ") +
                             e.what());
    }
    if (resolved.rank != plan.globalRank(localRank) || resolved.worldSize != plan.worldSize()) {
      throw std::logic_error("worker resolved " + env::describe(resolved) + ", planned rank " +
                             std::to_string(plan.globalRank(localRank)));
    }
  }
}

TEST(LaunchFlagsFuzzTest, EveryLaunchIsPlannedOrAPermanentError) {
  std::vector<std::string> corpus = fuzz::environmentCorpus();
  corpus.push_back(
      "--nproc-per-node=2\n--nnodes=2:2\n--node-rank=1\n--master-addr=node0\n"
      "--master-port=29400\n--max-restarts=3\n--rdzv-timeout=60\n--backend=gloo\n"
      "--grace-period=10\n--log-dir=/tmp/logs\n--redirects=3\n--error-file=/tmp/e.json\n"
      "--log-level=debug\n--dry-run\n");
  corpus.push_back("--standalone\n--nproc-per-node=auto\nPET_MAX_RESTARTS=2\nPET_STANDALONE=\n");
  corpus.push_back(
      "PET_NNODES=2\nPET_NODE_RANK=0\nPET_NPROC_PER_NODE=gpu\nPET_MASTER_ADDR=m\n"
      "PET_MASTER_PORT=29400\nPET_LOG_DIR=/tmp/l\nPET_REDIRECTS=1\nDDPRUN_ERROR_FILE=/tmp/e\n");
  std::vector<std::string> dictionary = fuzz::environmentDictionary();
  for (const auto& spec : launchFlagSpecs()) dictionary.push_back("--" + spec.name + "=");
  fuzz::Target target{"launch_flags", corpus, dictionary};
  target.parse = planAndCheckWorkers;
  fuzz::runAndExpectNoFindings(target, 20000);
}

}  // namespace
}  // namespace ddp::launcher
