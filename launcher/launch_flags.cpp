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
    std::size_t start = 0;
    while (true) {
      const auto comma = text.find(',', start);
      const FlagValue rank{text.substr(start, comma - start), origin};
      const auto parsed = env::parseInteger(rank.text, 0, 65535);
      if (!parsed.value) {
        fail("local ranks separated by commas, such as 0 or 0,1,2",
             "'" + rank.text + "' (" + parsed.found + ")");
      }
      ranks.insert(static_cast<int>(*parsed.value));
      if (comma == std::string::npos) return ranks;
      start = comma + 1;
    }
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

// torchrun's --nnodes takes N or MIN:MAX; a fixed count only.
int parseNnodes(const FlagValue& value) {
  const auto colon = value.text.find(':');
  if (colon == std::string::npos) return value.integer(1, 65536);
  const FlagValue min{value.text.substr(0, colon), value.origin};
  const FlagValue max{value.text.substr(colon + 1), value.origin};
  if (min.integer(1, 65536) != max.integer(1, 65536)) {
    value.fail("a fixed node count N (or N:N)",
               "an elastic range; elastic ranges are not supported");
  }
  return min.integer(1, 65536);
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
       "restarts of the worker group after a failure"},
      {"rdzv-timeout", "SECONDS", "", false, "0",
       "seconds the workers wait for the master (sets DDPRUN_RDZV_TIMEOUT; 0: the workers' "
       "default, 300)"},
      {"backend", "NAME", "", false, "",
       "gloo, nccl or auto (sets DDPRUN_BACKEND for the workers; empty: theirs)"},
      {"grace-period", "SECONDS", "", false, "30",
       "seconds between SIGTERM and SIGKILL at teardown; keep it below the pod's "
       "terminationGracePeriodSeconds"},
      {"log-dir", "DIR", var::kPetLogDir, false, "",
       "also write each worker's output to DIR/<run-id>_<random>/attempt_<restart>/"
       "<local_rank>/{stdout,stderr}.log (torchrun's layout)"},
      {"redirects", "STD", var::kPetRedirects, false, "0",
       "streams that go to the log files only, not the console: 0 none, 1 stdout, 2 stderr, "
       "3 both, or per local rank as 0:1,1:2 (without --log-dir: a new directory in $TMPDIR)",
       'r'},
      {"tee", "STD", var::kPetTee, false, "0",
       "streams also written to log files, as --redirects but kept on the console (with "
       "--log-dir every stream is written anyway; without: a new directory in $TMPDIR)",
       't'},
      {"local-ranks-filter", "RANKS", var::kPetLocalRanksFilter, false, "every local rank",
       "local ranks whose output reaches the console, e.g. 0 or 0,1; the log files and the "
       "failure report keep every rank"},
      {"log-line-prefix-template", "TEMPLATE", var::kPetLogLinePrefixTemplate, false,
       "[rank${rank}]: ",
       "prefix of each worker line on the console: ${rank}, ${local_rank}, ${role_name}, "
       "${hostname} (then TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE); not added to a line that "
       "already names its rank"},
      {"error-file", "PATH", var::kErrorFile, false,
       "<log-dir>/<run-id>_<random>/error.json with a log directory",
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
  if (auto v = read("nnodes")) plan.nnodes = parseNnodes(*v);
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
  if (auto v = read("log-level"); v && !v->text.empty()) command.logLevel = v->text;
  return command;
}

}  // namespace ddp::launcher
