#include "launcher/launch_flags.h"

#include <signal.h>
#include <string.h>

#include <algorithm>

#include <nlohmann/json.hpp>

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
  // A switch: the flag itself, or its variable as torchrun's check_env reads it (the
  // operator writes PET_STANDALONE="" for true).
  bool switchOn() const {
    if (origin.rfind("--", 0) == 0) return true;
    if (text == "" || text == "1" || text == "0") return text != "0";
    fail("empty, 0 or 1", "'" + text + "'");
  }
  // torchrun's Std syntax (--redirects, --tee): 0-3, or local_rank:0-3 pairs.
  StreamSelection streams() const {
    const auto selection = parseStreamSelection(text);
    if (!selection) {
      fail("0 (none), 1 (stdout), 2 (stderr), 3 (both), or per local rank as 0:1,1:2",
           "'" + text + "'");
    }
    return *selection;
  }
  // --local-ranks-filter: a comma-separated list of local ranks.
  std::set<int> localRanks() const {
    std::set<int> ranks;
    for (const auto& item : env::splitList(text, ',')) {
      const auto parsed = env::parseInteger(item, 0, 65535);
      if (!parsed.value) {
        fail("local ranks separated by commas, such as 0 or 0,1,2",
             "'" + item + "' (" + parsed.found + ")");
      }
      ranks.insert(static_cast<int>(*parsed.value));
    }
    return ranks;
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

// The signals --signals-to-handle may name: those a user or a scheduler sends to stop a job
// (SLURM: SIGUSR1/SIGUSR2 before the time limit). SIGCHLD is the launcher's own, SIGKILL and
// SIGSTOP cannot be caught, and faults (SIGSEGV, ...) are not requests to stop.
constexpr int kForwardableSignals[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGTERM, SIGUSR1,
                                       SIGUSR2, SIGALRM, SIGXCPU, SIGPWR};

std::vector<int> parseSignals(const FlagValue& value) {
  std::vector<int> signals;
  std::string names;
  for (int s : kForwardableSignals)
    names += std::string(names.empty() ? "" : ", ") + "SIG" + sigabbrev_np(s);
  for (const auto& name : env::splitList(value.text, ',')) {
    const auto known =
        std::find_if(std::begin(kForwardableSignals), std::end(kForwardableSignals),
                     [&](int s) { return name == std::string("SIG") + sigabbrev_np(s); });
    if (known == std::end(kForwardableSignals)) {
      value.fail("a comma-separated list of " + names, "'" + name + "'");
    }
    if (std::find(signals.begin(), signals.end(), *known) == signals.end()) {
      signals.push_back(*known);
    }
  }
  return signals;
}

}  // namespace

const std::vector<FlagSpec>& launchFlagSpecs() {
  namespace var = env::var;
  using enum TorchrunStatus;
  // torchrun's flags first, in the order of its --help; then ddprun's own.
  static const std::vector<FlagSpec> specs = {
      {.name = "nnodes",
       .valueName = "N",
       .variable = var::kPetNnodes,
       .variableReadElsewhere = true,
       .defaultText = "1",
       .help = "number of nodes, N, or MIN:MAX with --rdzv-backend c10d (elastic) (also from "
               "WORLD_SIZE, OMPI_COMM_WORLD_SIZE)",
       .torchrun = kSupported,
       .torchrunNote = "MIN:MAX with MIN < MAX needs --rdzv-backend c10d, as with torchrun's "
                       "static backend"},
      {.name = "nproc-per-node",
       .valueName = "N",
       .variable = var::kPetNprocPerNode,
       .variableReadElsewhere = true,
       .defaultText = "1",
       .help = "workers on this node: N, auto (one per visible GPU, else 1), gpu or cpu",
       .torchrun = kSupported,
       .torchrunNote = "xpu is refused: ddprun knows CUDA GPUs and CPUs only"},
      {.name = "rdzv-backend",
       .valueName = "NAME",
       .variable = var::kPetRdzvBackend,
       .defaultText = "static",
       .help = "static (--node-rank and --master-addr say where each node is) or c10d (the "
               "nodes meet at --rdzv-endpoint and get their ranks there; needed for --nnodes "
               "MIN:MAX)",
       .torchrun = kSupported,
       .torchrunNote = "etcd and etcd-v2 are refused: ddprun's c10d backend needs no etcd"},
      {.name = "rdzv-endpoint",
       .valueName = "HOST:PORT",
       .variable = var::kPetRdzvEndpoint,
       .defaultText = "",
       .help = "c10d: where the nodes meet; the node with that address hosts the store (port "
               "default 29400). static: the master's address and port",
       .torchrun = kSupported},
      {.name = "rdzv-id",
       .valueName = "ID",
       .variable = var::kPetRdzvId,
       .defaultText = kDefaultRunId,
       .help = "c10d: the job's id; jobs with different ids on one endpoint never meet",
       .torchrun = kSupported},
      {.name = "rdzv-conf",
       .valueName = "K=V,...",
       .variable = var::kPetRdzvConf,
       .defaultText = "",
       .help = "c10d: join_timeout (600), last_call_timeout (30), close_timeout (30), "
               "read_timeout (60), keep_alive_interval (1), keep_alive_max_attempt (5), is_host",
       .torchrun = kSupported,
       .torchrunNote = "torchrun's timeout, heartbeat_timeout, store_type, "
                       "cas_backoff_max_seconds and use_agent_store are ignored with a warning; "
                       "other keys are refused"},
      {.name = "standalone",
       .variable = var::kPetStandalone,
       .defaultText = "off",
       .help = "one node on loopback with a free port (the variable: empty or 1 is on, 0 off)",
       .torchrun = kSupported},
      {.name = "max-restarts",
       .valueName = "N",
       .variable = var::kPetMaxRestarts,
       .defaultText = "0",
       .help = "restarts of the worker group after a failure (membership changes do not "
               "count)",
       .torchrun = kSupported},
      {.name = "monitor-interval",
       .valueName = "SECONDS",
       .variable = var::kPetMonitorInterval,
       .defaultText = "0.1",
       .help = "c10d: how often the launcher checks the job's membership while the workers "
               "run",
       .torchrun = kSupported,
       .torchrunNote = "worker exits are seen at once (signalfd), not polled"},
      {.name = "start-method",
       .valueName = "METHOD",
       .variable = "PET_START_METHOD",
       .defaultText = "spawn",
       .help = "spawn, fork or forkserver",
       .torchrun = kIgnored,
       .torchrunNote = "every worker is a new process (fork, then exec of PROGRAM); the "
                       "methods differ only for workers made from torchrun's own Python"},
      {.name = "event-log-handler",
       .valueName = "NAME",
       .variable = "PET_EVENT_LOG_HANDLER",
       .defaultText = "null",
       .help = "a torchelastic event handler",
       .torchrun = kIgnored,
       .torchrunNote = "ddprun logs its events (start, exit, restart) as key=value lines; "
                       "torchelastic's Python handlers do not exist here"},
      {.name = "role",
       .valueName = "NAME",
       .variable = "PET_ROLE",
       .defaultText = "default",
       .help = "the workers' role: their ROLE_NAME",
       .torchrun = kSupported},
      {.name = "module",
       .shortName = 'm',
       .variable = "PET_MODULE",
       .defaultText = "off",
       .help = "run PROGRAM as a Python module: python -u -m PROGRAM ARGS",
       .torchrun = kSupported},
      {.name = "no-python",
       .variable = "PET_NO_PYTHON",
       .defaultText = "off",
       .help = "execute PROGRAM as it is, even a .py file (see 'How ddprun runs PROGRAM' "
               "below)",
       .torchrun = kSupported},
      {.name = "run-path",
       .variable = "PET_RUN_PATH",
       .defaultText = "off",
       .help = "run the Python script PROGRAM with runpy.run_path as __main__; wins over "
               "--no-python",
       .torchrun = kSupported,
       .torchrunNote = "in each worker's own interpreter, as torchrun's workers do; a "
                       "relative path is fine"},
      {.name = "log-dir",
       .valueName = "DIR",
       .variable = var::kPetLogDir,
       .defaultText = "",
       .help = "also write each worker's output to DIR/<run-id>_<random>/attempt_<restart>/"
               "<local_rank>/{stdout,stderr}.log (torchrun's layout)",
       .torchrun = kSupported},
      {.name = "redirects",
       .shortName = 'r',
       .valueName = "STD",
       .variable = var::kPetRedirects,
       .defaultText = "0",
       .help = "streams that go to the log files only, not the console: 0 none, 1 stdout, "
               "2 stderr, 3 both, or per local rank as 0:1,1:2 (without --log-dir: a new "
               "directory in $TMPDIR)",
       .torchrun = kSupported},
      {.name = "tee",
       .shortName = 't',
       .valueName = "STD",
       .variable = var::kPetTee,
       .defaultText = "0",
       .help = "streams also written to log files, as --redirects but kept on the console "
               "(with --log-dir every stream is written anyway; without: a new directory in "
               "$TMPDIR)",
       .torchrun = kSupported},
      {.name = "log-line-prefix-template",
       .valueName = "TEMPLATE",
       .variable = var::kPetLogLinePrefixTemplate,
       .defaultText = "[rank${rank}]: ",
       .help = "prefix of each worker line on the console: ${rank}, ${local_rank}, "
               "${role_name}, ${hostname} (then TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE); not "
               "added to a line that already names its rank",
       .torchrun = kSupported,
       .torchrunNote = "every console line gets it, not only tee'd ones"},
      {.name = "local-ranks-filter",
       .valueName = "RANKS",
       .variable = var::kPetLocalRanksFilter,
       .defaultText = "every local rank",
       .help = "local ranks whose output reaches the console, e.g. 0 or 0,1; the log files and "
               "the failure report keep every rank",
       .torchrun = kSupported},
      {.name = "duplicate-stdout-filters",
       .valueName = "LIST",
       .variable = "PET_DUPLICATE_STDOUT_FILTERS",
       .defaultText = "",
       .help = "copy stdout lines matching any of these to a file",
       .torchrun = kRefused,
       .torchrunNote = "ddprun writes no filtered copies: grep the per-rank files of --log-dir"},
      {.name = "duplicate-stderr-filters",
       .valueName = "LIST",
       .variable = "PET_DUPLICATE_STDERR_FILTERS",
       .defaultText = "",
       .help = "copy stderr lines matching any of these to a file",
       .torchrun = kRefused,
       .torchrunNote = "ddprun writes no filtered copies: grep the per-rank files of --log-dir"},
      {.name = "node-rank",
       .valueName = "RANK",
       .variable = var::kPetNodeRank,
       .variableReadElsewhere = true,
       .defaultText = "0",
       .help = "rank of this node in [0, nnodes) (also from RANK, OMPI_COMM_WORLD_RANK)",
       .torchrun = kSupported},
      {.name = "master-addr",
       .valueName = "HOST",
       .variable = var::kPetMasterAddr,
       .variableReadElsewhere = true,
       .defaultText = "127.0.0.1",
       .help = "host of the node with rank 0 (MASTER_ADDR first)",
       .torchrun = kSupported},
      {.name = "master-port",
       .valueName = "PORT",
       .variable = var::kPetMasterPort,
       .variableReadElsewhere = true,
       .defaultText = "29500",
       .help = "port of rank 0's TCPStore (MASTER_PORT first)",
       .torchrun = kSupported},
      {.name = "local-addr",
       .valueName = "ADDR",
       .variable = var::kPetLocalAddr,
       .defaultText = "",
       .help = "c10d: this node's address for the others (default: the local address of a "
               "socket connected to the endpoint)",
       .torchrun = kSupported},
      {.name = "logs-specs",
       .valueName = "NAME",
       .help = "a torchrun.logs_specs entry point",
       .torchrun = kRefused,
       .torchrunNote = "it names a Python class to load; ddprun loads no Python: use --log-dir "
                       "and --redirects"},
      {.name = "numa-binding",
       .valueName = "MODE",
       .help = "bind workers to the CPUs near their GPU",
       .torchrun = kRefused,
       .torchrunNote = "not implemented; bind in the program or with numactl, or let the "
                       "kubelet's CPU manager place the pod"},
      {.name = "signals-to-handle",
       .valueName = "LIST",
       .variable = "PET_SIGNALS_TO_HANDLE",
       .defaultText = "SIGTERM,SIGINT,SIGHUP,SIGQUIT",
       .help = "signals the launcher forwards to every worker before it stops them and exits "
               "128 + signal (e.g. add SIGUSR1 for SLURM)",
       .torchrun = kSupported},
      {.name = "shutdown-timeout",
       .valueName = "SECONDS",
       .variable = "PET_SHUTDOWN_TIMEOUT",
       .defaultText = "30",
       .help = "torchrun's name for --grace-period",
       .torchrun = kSupported,
       .torchrunNote = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT is not read"},
      {.name = "virtual-local-rank",
       .variable = "PET_VIRTUAL_LOCAL_RANK",
       .defaultText = "off",
       .help = "every worker gets LOCAL_RANK=0 and sees only its own GPU (CUDA_VISIBLE_DEVICES "
               "is its entry of the launcher's, else its local rank)",
       .torchrun = kSupported},
      {.name = "print-completion",
       .valueName = "SHELL",
       .help = "print a completion script for bash, zsh or tcsh and exit",
       .torchrun = kSupported},
      {.name = "help",
       .shortName = 'h',
       .help = "print this help and exit",
       .torchrun = kSupported},
      // ddprun's own.
      {.name = "python",
       .valueName = "PATH",
       .variable = "PYTHON_EXEC",
       .defaultText = "python3, else python, in PATH",
       .help = "the interpreter of Python programs (PYTHON_EXEC is torchrun's override)"},
      {.name = "rdzv-timeout",
       .valueName = "SECONDS",
       .defaultText = "0",
       .help = "seconds the workers wait for the master (sets DDPRUN_RDZV_TIMEOUT; 0: the "
               "workers' default, 300)"},
      {.name = "hang-timeout",
       .valueName = "SECONDS",
       .defaultText = "0",
       .help = "seconds the job may go without progress before the workers' watchdog ends it "
               "(sets DDPRUN_HANG_TIMEOUT; 0: calibrated, max(60, 10 x the slowest step))"},
      {.name = "metrics-port",
       .valueName = "PORT",
       .variable = var::kMetricsPort,
       .defaultText = "9410",
       .help = "serve GET /metrics (Prometheus), /healthz and /readyz on this port (0: off; "
               "the manifests name it `metrics`)"},
      {.name = "metrics-host",
       .valueName = "ADDRESS",
       .variable = var::kMetricsHost,
       .defaultText = "0.0.0.0",
       .help = "the address the metrics port listens on (0.0.0.0: every interface, as a pod "
               "needs; 127.0.0.1: this machine only)"},
      {.name = "no-progress",
       .defaultText = "off",
       .help = "no progress bar at a terminal (a bar is drawn only when stderr is one)"},
      {.name = "backend",
       .valueName = "NAME",
       .defaultText = "",
       .help = "gloo, nccl or auto (sets DDPRUN_BACKEND for the workers; empty: theirs)"},
      {.name = "grace-period",
       .valueName = "SECONDS",
       .defaultText = "30",
       .help = "seconds between the stop signal and SIGKILL at teardown; keep it below the "
               "pod's terminationGracePeriodSeconds"},
      {.name = "error-file",
       .valueName = "PATH",
       .variable = var::kErrorFile,
       .defaultText = "<log-dir>/<run-id>_<random>/error.json with a log directory",
       .help = "write the failure report as JSON here (e.g. /dev/termination-log)"},
      {.name = "dry-run",
       .defaultText = "off",
       .help = "print the resolved plan and every worker's environment as JSON; start nothing"},
      {.name = "log-level",
       .valueName = "LEVEL",
       .variable = var::kLogLevel,
       .variableReadElsewhere = true,
       .defaultText = "info",
       .help = "debug, info, warn, error or off"},
      {.name = "flags-json",
       .help = "print this table of flags, with each torchrun flag's status, as JSON and exit"},
      {.name = "version", .help = "print the version and exit"},
  };
  return specs;
}

std::string torchrunStatusName(TorchrunStatus status) {
  switch (status) {
    case TorchrunStatus::kNotTorchrun:
      return "not-torchrun";
    case TorchrunStatus::kSupported:
      return "supported";
    case TorchrunStatus::kIgnored:
      return "ignored";
    case TorchrunStatus::kRefused:
      return "refused";
  }
  return "unknown";
}

std::vector<std::string> flagSpellings(const FlagSpec& spec) {
  std::vector<std::string> spellings{"--" + spec.name};
  std::string underscored = spec.name;
  std::replace(underscored.begin(), underscored.end(), '-', '_');
  if (underscored != spec.name) spellings.push_back("--" + underscored);
  if (spec.shortName != 0) spellings.push_back(std::string{'-', spec.shortName});
  return spellings;
}

std::string flagTableJson() {
  auto flags = nlohmann::ordered_json::array();
  for (const auto& spec : launchFlagSpecs()) {
    flags.push_back({{"name", spec.name},
                     {"spellings", flagSpellings(spec)},
                     {"takesValue", !spec.valueName.empty()},
                     {"variable", spec.variable},
                     {"default", spec.defaultText},
                     {"help", spec.help},
                     {"torchrun", torchrunStatusName(spec.torchrun)},
                     {"torchrunNote", spec.torchrunNote}});
  }
  return flags.dump(2);
}

bool flagTakesValue(std::string_view arg) {
  for (const auto& spec : launchFlagSpecs()) {
    if (spec.valueName.empty()) continue;
    for (const auto& spelling : flagSpellings(spec)) {
      if (arg == spelling) return true;
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
  auto monitorInterval = read("monitor-interval");
  if (monitorInterval) {
    const auto parsed = env::parseSeconds(monitorInterval->text);
    if (!parsed.value) monitorInterval->fail(env::secondsExpectation(), parsed.found);
    command.monitorInterval = *parsed.value;
  }
  auto conf = read("rdzv-conf");
  auto localAddr = read("local-addr");
  if (backend == "static") {
    // Checked all the same (a typo is refused), then said to change nothing.
    if (conf) {
      RendezvousConfig unused;
      parseRendezvousConf(conf->text, conf->origin, unused);
    }
    for (const auto* v : {&conf, &localAddr, &monitorInterval}) {
      if (*v) {
        command.ignoredFlags.push_back((*v)->origin + "=" + (*v)->text +
                                       ": accepted and ignored: it only matters with "
                                       "--rdzv-backend c10d (the static backend has no "
                                       "rendezvous rounds)");
      }
    }
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
  if (conf) {
    for (auto& ignored : parseRendezvousConf(conf->text, conf->origin, config)) {
      command.ignoredFlags.push_back(std::move(ignored));
    }
  }
  if (localAddr) config.localAddr = localAddr->text;
  command.rendezvous = config;
}

}  // namespace

LaunchCommand readLaunchCommand(const GivenFlags& given, const env::EnvMap& env) {
  namespace var = env::var;
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
  if (auto v = read("standalone")) plan.standalone = v->switchOn();
  if (auto v = read("rdzv-timeout")) {
    command.rendezvousTimeoutSeconds = v->integer(0, static_cast<int>(env::kMaxTimeoutSeconds));
  }
  if (auto v = read("hang-timeout")) {
    command.hangTimeoutSeconds = v->integer(0, static_cast<int>(env::kMaxTimeoutSeconds));
  }
  if (auto v = read("metrics-port")) command.metricsPort = v->integer(0, 65535);
  if (auto v = read("metrics-host")) {
    if (const auto problem = env::checkBareHost(v->text)) {
      v->fail(problem->expected, problem->found,
              "Give an address of this machine, e.g. 0.0.0.0 or 127.0.0.1.");
    }
    command.metricsHost = v->text;
  }
  command.progress = !read("no-progress").has_value();
  if (auto v = read("backend")) {
    if (v->text != "" && v->text != "gloo" && v->text != "nccl" && v->text != "auto") {
      v->fail("gloo, nccl or auto", "'" + v->text + "'");
    }
    command.backend = v->text;
  }
  // --grace-period, else torchrun's name for it.
  const auto grace = read("grace-period");
  const auto shutdownTimeout = read("shutdown-timeout");
  if (grace) command.gracePeriodSeconds = grace->integer(0, 3600);
  if (shutdownTimeout) {
    const int seconds = shutdownTimeout->integer(0, 3600);
    if (!grace) {
      command.gracePeriodSeconds = seconds;
    } else if (shutdownTimeout->origin == "--shutdown-timeout" &&
               seconds != command.gracePeriodSeconds) {
      throw LaunchError("--grace-period=" + grace->text +
                        " and --shutdown-timeout=" + shutdownTimeout->text +
                        " are one setting (torchrun calls it --shutdown-timeout) with two "
                        "values. Give one of them.");
    }
  }
  if (auto v = read("log-dir"); v && !v->text.empty()) {
    command.logDir = v->outputPath(env::FileKind::kDirectory);
  }
  if (auto v = read("redirects")) command.redirects = v->streams();
  if (auto v = read("tee")) command.tee = v->streams();
  if (auto v = read("local-ranks-filter"); v && !v->text.empty()) {
    command.localRanksFilter = v->localRanks();
  }
  if (auto v = read("log-line-prefix-template"); v && !v->text.empty()) {
    command.linePrefixTemplate = v->text;
  } else if (auto text = env::lookup(env, var::kTorchelasticLogLinePrefixTemplate)) {
    command.linePrefixTemplate = *text;
    command.origins["log-line-prefix-template"] = var::kTorchelasticLogLinePrefixTemplate;
  }
  if (auto v = read("error-file"); v && !v->text.empty()) {
    command.errorFile = v->outputPath(env::FileKind::kWritableFile);
  }
  command.dryRun = read("dry-run").has_value();
  readRendezvous(command, read);
  auto& program = command.program;
  if (auto v = read("module")) program.module = v->switchOn();
  if (auto v = read("no-python")) program.noPython = v->switchOn();
  if (auto v = read("run-path")) program.runPath = v->switchOn();
  if (auto v = read("python"); v && !v->text.empty()) {
    program.python = v->text;
    program.pythonOrigin = v->origin;
  }
  if (auto v = read("role")) {
    if (v->text.empty()) v->fail("a role name (ROLE_NAME)", "an empty value");
    command.role = v->text;
  }
  if (auto v = read("virtual-local-rank")) command.virtualLocalRank = v->switchOn();
  command.signalsToHandle = parseSignals(
      read("signals-to-handle").value_or(FlagValue{specOf("signals-to-handle").defaultText, ""}));
  if (auto v = read("start-method");
      v && v->text != "spawn" && v->text != "fork" && v->text != "forkserver") {
    v->fail("spawn, fork or forkserver", "'" + v->text + "'");
  }
  // Note [torchrun's flags]: the rest of the ignored and refused rows.
  for (const auto& spec : launchFlagSpecs()) {
    if (spec.torchrun != TorchrunStatus::kIgnored && spec.torchrun != TorchrunStatus::kRefused) {
      continue;
    }
    const auto v = read(spec.name);
    if (!v || v->text == spec.defaultText) continue;
    const std::string given = v->origin + "=" + v->text;
    if (spec.torchrun == TorchrunStatus::kRefused) {
      throw LaunchError(given + ": torchrun's --" + spec.name + " is not supported by ddprun: " +
                        spec.torchrunNote + ". Drop it (README, 'torchrun's flags', lists " +
                        "what ddprun does with each of them).");
    }
    command.ignoredFlags.push_back(given + ": accepted and ignored: " + spec.torchrunNote);
  }
  if (auto v = read("log-level"); v && !v->text.empty()) command.logLevel = v->text;
  return command;
}

}  // namespace ddp::launcher
