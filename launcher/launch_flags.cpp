#include "launcher/launch_flags.h"

#include <algorithm>

#include "runtime/env/value_parser.h"
#include "runtime/env/variables.h"

namespace ddp::launcher {
namespace {

// A value and where it came from, for parsers and their errors.
struct FlagValue {
  std::string text;
  std::string origin;  // "--name" or the variable

  [[noreturn]] void fail(const std::string& expected, const std::string& found,
                         const std::string& flagHint = "Run 'ddprun --help' for the flags.") const {
    const bool fromFlag = origin.rfind("--", 0) == 0;
    throw LaunchError(env::describeBadValue(
        origin, text, expected, found,
        fromFlag ? flagHint
                 : "Fix " + origin + " where it is set (pod spec or shell), or pass the flag."));
  }
  // A path the launcher writes: of `kind` if it is there already (env::checkPath), so that a
  // FIFO or a file in the wrong place is refused before any worker starts.
  std::string outputPath(env::FileKind kind) const {
    if (const auto problem = env::checkPath(text, kind, /*mayBeMissing=*/true)) {
      fail(problem->expected + " (or a path to create)", problem->found);
    }
    return text;
  }
  int integer(int min, int max) const {
    const auto parsed = env::parseInteger(text, min, max);
    if (!parsed.value) fail(env::integerExpectation(min, max), parsed.found);
    return static_cast<int>(*parsed.value);
  }
};

const FlagSpec& specOf(const std::string& name) {
  for (const auto& spec : launchFlagSpecs()) {
    if (spec.name == name) return spec;
  }
  throw std::logic_error("no launcher flag named " + name);  // a bug in this file
}

// The flag, else its variable unless that is read elsewhere, else nullopt.
std::optional<FlagValue> valueOf(const GivenFlags& given, const env::EnvMap& env,
                                 const std::string& name) {
  if (auto it = given.find(name); it != given.end()) return FlagValue{it->second, "--" + name};
  const auto& spec = specOf(name);
  if (spec.variable.empty() || spec.variableReadElsewhere) return std::nullopt;
  if (auto text = env::lookup(env, spec.variable)) return FlagValue{*text, spec.variable};
  return std::nullopt;
}

// torchrun's --nnodes takes N or MIN:MAX (elastic: --rdzv-backend c10d only, checked by
// resolveLaunchPlan once the backend is known).
env::NodeCountRange parseNnodes(const FlagValue& value) {
  const auto colon = value.text.find(':');
  if (colon == std::string::npos) {
    const int count = value.integer(1, 65536);
    return {count, count};
  }
  const FlagValue min{value.text.substr(0, colon), value.origin};
  const FlagValue max{value.text.substr(colon + 1), value.origin};
  const env::NodeCountRange range{min.integer(1, 65536), max.integer(1, 65536)};
  if (range.min > range.max) value.fail("MIN:MAX with MIN <= MAX", "MIN above MAX");
  return range;
}

}  // namespace

const std::vector<FlagSpec>& launchFlagSpecs() {
  namespace var = env::var;
  static const std::vector<FlagSpec> specs = {
      {"nproc-per-node", "N", var::kPetNprocPerNode, true, "1",
       "workers on this node: N, auto (one per visible GPU, else 1), gpu or cpu"},
      {"nnodes", "N", var::kPetNnodes, true, "1",
       "number of nodes, N or N:N (also from WORLD_SIZE, OMPI_COMM_WORLD_SIZE)"},
      {"node-rank", "RANK", var::kPetNodeRank, true, "0",
       "rank of this node in [0, nnodes) (also from RANK, OMPI_COMM_WORLD_RANK)"},
      {"master-addr", "HOST", var::kPetMasterAddr, true, "127.0.0.1",
       "host of the node with rank 0 (MASTER_ADDR first)"},
      {"master-port", "PORT", var::kPetMasterPort, true, "29500",
       "port of rank 0's TCPStore (MASTER_PORT first)"},
      {"standalone", "", var::kPetStandalone, false, "off",
       "one node on loopback with a free port (the variable: empty or 1 is on, 0 off)"},
      {"max-restarts", "N", var::kPetMaxRestarts, false, "0",
       "restarts of the worker group after a failure (membership changes do not count)"},
      {"rdzv-backend", "NAME", var::kPetRdzvBackend, false, "static",
       "static (--node-rank and --master-addr say where each node is) or c10d (the nodes "
       "meet at --rdzv-endpoint and get their ranks there; needed for --nnodes MIN:MAX); "
       "etcd and etcd-v2 are refused"},
      {"rdzv-endpoint", "HOST:PORT", var::kPetRdzvEndpoint, false, "",
       "c10d: where the nodes meet; the node with that address hosts the store (port "
       "default 29400). static: the master's address and port"},
      {"rdzv-id", "ID", var::kPetRdzvId, false, "none",
       "c10d: the job's id; jobs with different ids on one endpoint never meet"},
      {"rdzv-conf", "K=V,...", var::kPetRdzvConf, false, "",
       "c10d: join_timeout (600), last_call_timeout (30), close_timeout (30), read_timeout "
       "(60), keep_alive_interval (1), keep_alive_max_attempt (5), is_host; other keys are "
       "refused (torchrun's timeout, heartbeat_timeout, store_type, cas_backoff_max_seconds, "
       "use_agent_store are ignored with a warning)"},
      {"local-addr", "ADDR", var::kPetLocalAddr, false, "",
       "c10d: this node's address for the others (default: the local address of a socket "
       "connected to the endpoint)"},
      {"monitor-interval", "SECONDS", var::kPetMonitorInterval, false, "0.1",
       "c10d: how often the launcher checks the job's membership while the workers run"},
      {"rdzv-timeout", "SECONDS", "", false, "0",
       "seconds the workers wait for the master (sets DDPRUN_RDZV_TIMEOUT; 0: the workers' "
       "default, 300)"},
      {"backend", "NAME", "", false, "",
       "gloo, nccl or auto (sets DDPRUN_BACKEND for the workers; empty: theirs)"},
      {"grace-period", "SECONDS", "", false, "30",
       "seconds between SIGTERM and SIGKILL at teardown; keep it below the pod's "
       "terminationGracePeriodSeconds"},
      {"log-dir", "DIR", var::kPetLogDir, false, "",
       "also write each worker's output to DIR/attempt_<restart>/rank_<rank>/{stdout,stderr}.log"},
      {"redirects", "0-3", var::kPetRedirects, false, "0",
       "streams that go to the log files only, not the console: 0 none, 1 stdout, 2 stderr, "
       "3 both (needs --log-dir)",
       'r'},
      {"error-file", "PATH", var::kErrorFile, false, "<log-dir>/error.json with --log-dir",
       "write the failure report as JSON here (e.g. /dev/termination-log)"},
      {"dry-run", "", "", false, "off",
       "print the resolved plan and every worker's environment as JSON; start nothing"},
      {"log-level", "LEVEL", var::kLogLevel, true, "info", "debug, info, warn, error or off"},
  };
  return specs;
}

bool flagTakesValue(std::string_view arg) {
  for (const auto& spec : launchFlagSpecs()) {
    if (spec.valueName.empty()) continue;
    std::string underscored = spec.name;
    std::replace(underscored.begin(), underscored.end(), '-', '_');
    if (arg == "--" + spec.name || arg == "--" + underscored ||
        (spec.shortName != 0 && arg == std::string{'-', spec.shortName})) {
      return true;
    }
  }
  return false;
}

namespace {

// --rdzv-*, --local-addr and --monitor-interval.
template <typename Read>
void readRendezvous(LaunchCommand& command, Read& read) {
  std::string backend = "static";
  if (auto v = read("rdzv-backend")) {
    if (v->text == "etcd" || v->text == "etcd-v2") {
      v->fail("static or c10d", "'" + v->text + "', which needs an etcd server",
              "Use c10d: it needs no extra service (the store lives in one node's ddprun).");
    }
    if (v->text != "static" && v->text != "c10d") v->fail("static or c10d", "'" + v->text + "'");
    backend = v->text;
  }
  command.plan.rendezvousBackend = backend;
  auto endpoint = read("rdzv-endpoint");
  if (endpoint && endpoint->text.empty()) endpoint.reset();
  if (auto v = read("rdzv-id"); v && !v->text.empty()) command.plan.runId = v->text;
  if (auto v = read("monitor-interval")) {
    const auto parsed = env::parseSeconds(v->text);
    if (!parsed.value) v->fail(env::secondsExpectation(), parsed.found);
    command.monitorInterval = *parsed.value;
  }
  auto conf = read("rdzv-conf");
  auto localAddr = read("local-addr");
  if (backend == "static") {
    // torchrun's static backend takes its master from the endpoint when there is one.
    if (endpoint && !command.plan.masterAddr) {
      RendezvousConfig parsed;
      parseRendezvousEndpoint(endpoint->text, endpoint->origin, parsed);
      // The workers get it as MASTER_ADDR, which must be a bare host name or address.
      if (const auto problem = env::checkBareHost(parsed.endpointHost)) {
        endpoint->fail(problem->expected, problem->found,
                       "With --rdzv-backend static, the endpoint is the master's HOST:PORT.");
      }
      command.plan.masterAddr = parsed.endpointHost;
      if (endpoint->text.find(':') != std::string::npos && !command.plan.masterPort) {
        command.plan.masterPort = parsed.endpointPort;
      }
    }
    return;
  }
  RendezvousConfig config;
  if (!endpoint) {
    throw LaunchError(
        "--rdzv-backend c10d needs --rdzv-endpoint HOST:PORT (or PET_RDZV_ENDPOINT): where "
        "the nodes meet; the node with that address hosts the store. E.g. --rdzv-endpoint "
        "node0:29400.");
  }
  parseRendezvousEndpoint(endpoint->text, endpoint->origin, config);
  config.runId = command.plan.runId;
  if (conf) command.warnings = parseRendezvousConf(conf->text, conf->origin, config);
  if (localAddr) config.localAddr = localAddr->text;
  command.rendezvous = config;
}

}  // namespace

LaunchCommand readLaunchCommand(const GivenFlags& given, const env::EnvMap& env) {
  LaunchCommand command;
  auto& plan = command.plan;
  auto read = [&](const std::string& name) {
    auto value = valueOf(given, env, name);
    if (value) command.origins[name] = value->origin;
    return value;
  };
  if (auto v = read("nproc-per-node")) plan.nprocPerNode = v->text;
  if (auto v = read("nnodes")) {
    const auto range = parseNnodes(*v);
    plan.nnodes = range.min;
    plan.maxNodes = range.max;
  }
  if (auto v = read("node-rank")) plan.nodeRank = v->integer(0, 65535);
  if (auto v = read("master-addr")) {
    if (const auto problem = env::checkBareHost(v->text)) {
      v->fail(problem->expected, problem->found,
              "Put the host in --master-addr and the port in --master-port.");
    }
    plan.masterAddr = v->text;
  }
  if (auto v = read("master-port")) plan.masterPort = v->integer(1, 65535);
  if (auto v = read("max-restarts")) {
    plan.maxRestarts = v->integer(0, 1000);
    plan.maxRestartsOrigin = v->origin;
  }
  if (auto v = read("standalone")) {
    // The operator writes PET_STANDALONE="" for true.
    if (v->origin == "--standalone") {
      plan.standalone = true;
    } else if (v->text == "" || v->text == "1" || v->text == "0") {
      plan.standalone = v->text != "0";
    } else {
      v->fail("empty, 0 or 1", "'" + v->text + "'");
    }
  }
  if (auto v = read("rdzv-timeout")) {
    command.rendezvousTimeoutSeconds = v->integer(0, static_cast<int>(env::kMaxTimeoutSeconds));
  }
  if (auto v = read("backend")) {
    if (v->text != "" && v->text != "gloo" && v->text != "nccl" && v->text != "auto") {
      v->fail("gloo, nccl or auto", "'" + v->text + "'");
    }
    command.backend = v->text;
  }
  if (auto v = read("grace-period")) command.gracePeriodSeconds = v->integer(0, 3600);
  if (auto v = read("log-dir"); v && !v->text.empty()) {
    command.logDir = v->outputPath(env::FileKind::kDirectory);
  }
  if (auto v = read("redirects")) command.redirects = v->integer(0, 3);
  if (command.redirects != 0 && command.logDir.empty()) {
    throw LaunchError("--redirects=" + std::to_string(command.redirects) +
                      " sends output to the log files only, but there is no --log-dir. Add "
                      "--log-dir DIR, or drop --redirects.");
  }
  if (auto v = read("error-file"); v && !v->text.empty()) {
    command.errorFile = v->outputPath(env::FileKind::kWritableFile);
  } else if (!command.logDir.empty()) {
    command.errorFile = command.logDir + "/error.json";
  }
  command.dryRun = read("dry-run").has_value();
  readRendezvous(command, read);
  if (auto v = read("log-level"); v && !v->text.empty()) command.logLevel = v->text;
  return command;
}

}  // namespace ddp::launcher
