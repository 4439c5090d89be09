// ddprun: starts the worker processes of one node with torchrun's environment (RANK,
// LOCAL_RANK, WORLD_SIZE, ...), prefixes their output with the rank, tears the group down
// on the first failure or on SIGTERM/SIGINT, and restarts it up to --max-restarts.
//
//   ddprun [options] [--] PROGRAM [ARGS...]
//
// Flags are declared once in launcher/launch_flags.cpp. Without them, the node's place in the
// job comes from the environment (Note [Environment precedence] in runtime/env/cluster_env.h,
// the node column).
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

#include <cxxopts.hpp>

#include "launcher/elastic_agent.h"
#include "launcher/failure_report.h"
#include "launcher/group_guardian.h"
#include "launcher/launch_flags.h"
#include "launcher/launch_plan.h"
#include "launcher/output_router.h"
#include "launcher/worker_group.h"
#include "launcher/worker_program.h"
#include "runtime/config.h"
#include "runtime/env/cluster_env.h"
#include "runtime/env/value_parser.h"
#include "runtime/env/variables.h"
#include "runtime/error.h"
#include "runtime/log/logging.h"
#include "runtime/metrics/trainjob_progress.h"

namespace {

using ddp::launcher::LaunchError;

int freeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    throw ddp::TransientError("--standalone: cannot bind a port on 127.0.0.1: " +
                              std::string(std::strerror(errno)));
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// A --log-dir (or PET_LOG_DIR) that cannot be written fails every attempt: a usage error,
// said before any worker starts.
void checkLogDir(const ddp::launcher::LaunchCommand& options) {
  if (options.logDir.empty() || options.dryRun) return;
  const auto problem = ddp::launcher::prepareLogDir(options.logDir);
  if (problem.empty()) return;
  const std::string expected = "a directory ddprun can create and write the workers' logs in";
  const std::string hint =
      "Point it at a writable directory (in a pod: a volume mounted read-write), or fix the "
      "permissions of this one.";
  const auto& origin = options.origins.at("log-dir");
  if (origin.rfind("--", 0) == 0) {
    throw LaunchError(ddp::env::describeBadValue(origin, options.logDir, expected, problem, hint));
  }
  throw ddp::env::EnvError(origin, options.logDir, expected, problem, hint);
}

// torchrun's --tee and --redirects without --log-dir write to a new temporary directory;
// its path is in the start-up summary.
std::string makeTemporaryLogDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "ddprun_XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    throw ddp::TransientError(
        "--tee/--redirects without --log-dir: cannot create a directory "
        "in " +
        std::filesystem::temp_directory_path().string() + ": " + std::strerror(errno) +
        ". Pass --log-dir DIR.");
  }
  return pattern;
}

std::string hostName() {
  char name[256] = {};
  return gethostname(name, sizeof(name) - 1) == 0 ? name : "";
}

struct Command {
  ddp::launcher::WorkerGroupSpec spec;
  ddp::launcher::WorkerProgram program;
  std::vector<int> signalsToHandle;
  std::string errorFile;
  bool dryRun = false;
  std::optional<ddp::launcher::RendezvousConfig> rendezvous;  // --rdzv-backend c10d
  std::chrono::milliseconds monitorInterval{100};
  ddp::metrics::NodeMonitorOptions monitor;  // --metrics-port, --metrics-host
  std::string ompNote;  // why OMP_NUM_THREADS has the value it has, for the summary
};

// Printed after the flags by --help: Note [How ddprun runs PROGRAM] in a user's words.
constexpr const char* kProgramHelp = R"(How ddprun runs PROGRAM (first rule that matches):
  --run-path           Python runs the file PROGRAM with runpy.run_path, as __main__
  -m, --module         python -u -m PROGRAM ARGS
  --no-python          PROGRAM is executed as it is
  PROGRAM ends in .py  python -u PROGRAM ARGS (torchrun's way), whatever its mode bits
  a directory with __main__.py: python -u PROGRAM ARGS
  an executable file   executed directly (an ELF binary such as ddptrain, or a #! script);
                       a name without '/' is looked up in PATH
  a non-executable file starting with #!...python: python -u PROGRAM ARGS
Python is --python, else PYTHON_EXEC, else python3, else python in PATH. A PROGRAM, module
or interpreter that cannot be found exits 2 before any worker starts, naming what was tried.
torchrun's flags that ddprun accepts without using them, or refuses, are in "torchrun
compatibility options" above, with the reason; README, "torchrun's flags", has the table.)";

// Completion for `shell` from the flag table (torchrun's --print-completion).
std::string completionScript(const std::string& shell) {
  std::string words;
  for (const auto& spec : ddp::launcher::launchFlagSpecs()) {
    for (const auto& spelling : ddp::launcher::flagSpellings(spec)) {
      words += (words.empty() ? "" : " ") + spelling;
    }
  }
  if (shell == "bash") return "complete -o default -W '" + words + "' ddprun\n";
  if (shell == "zsh") {
    return "autoload -U +X bashcompinit && bashcompinit\ncomplete -o default -W '" + words +
           "' ddprun\n";
  }
  if (shell == "tcsh") {
    std::string list;
    for (const auto& spec : ddp::launcher::launchFlagSpecs()) {
      list += (list.empty() ? "" : " ") + spec.name;
    }
    return "complete ddprun 'c/--/(" + list + ")/' 'p/*/f/'\n";
  }
  throw LaunchError("--print-completion=" + shell + ": expected bash, zsh or tcsh; found '" +
                    shell + "'.");
}

// cxxopts over the flag table (launch_flags.h): each flag once, with its underscore alias.
cxxopts::Options makeCli() {
  cxxopts::Options cli("ddprun",
                       "Starts PROGRAM as the data-parallel workers of this node, watches them, "
                       "and restarts the group on failure.\n"
                       "  ddprun [options] [--] PROGRAM [ARGS...]\n"
                       "A flag that is not given falls back to the variable in [env ...] and "
                       "then to its default; the node's place also comes from RANK/WORLD_SIZE/"
                       "MASTER_*, OMPI_*/PMI_* (see the README).");
  using ddp::launcher::TorchrunStatus;
  for (const auto& spec : ddp::launcher::launchFlagSpecs()) {
    std::string names =
        spec.shortName != 0 ? std::string{spec.shortName, ','} + spec.name : spec.name;
    std::string underscored = spec.name;
    std::replace(underscored.begin(), underscored.end(), '-', '_');
    if (underscored != spec.name) names += "," + underscored;
    std::string help = spec.help;
    if (spec.torchrun == TorchrunStatus::kIgnored) help = "IGNORED: " + spec.torchrunNote;
    if (spec.torchrun == TorchrunStatus::kRefused) {
      help = "REFUSED unless " +
             (spec.defaultText.empty() ? std::string("empty") : spec.defaultText) + ": " +
             spec.torchrunNote;
    } else if (spec.torchrun == TorchrunStatus::kSupported && !spec.torchrunNote.empty()) {
      help += "; " + spec.torchrunNote;
    }
    if (!spec.variable.empty() || !spec.defaultText.empty()) {
      help += "  [";
      if (!spec.variable.empty()) help += "env " + spec.variable + "; ";
      help +=
          "default " + (spec.defaultText.empty() ? std::string("none") : spec.defaultText) + "]";
    }
    const bool unused =
        spec.torchrun == TorchrunStatus::kIgnored || spec.torchrun == TorchrunStatus::kRefused;
    auto add = cli.add_options(unused ? "torchrun compatibility" : "");
    if (spec.valueName.empty()) {
      add(names, help);
    } else {
      add(names, help, cxxopts::value<std::string>(), spec.valueName);
    }
  }
  return cli;
}

Command parseCommand(int argc, char** argv) {
  std::vector<std::string> own{argv[0]};
  std::vector<std::string> program;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      program.assign(argv + i + 1, argv + argc);
      break;
    }
    if (arg.rfind("-", 0) != 0) {
      program.assign(argv + i, argv + argc);
      break;
    }
    own.push_back(arg);
    if (ddp::launcher::flagTakesValue(arg) && i + 1 < argc) own.push_back(argv[++i]);
  }

  // cxxopts matches every argument against a std::regex, and libstdc++'s matcher recurses
  // once per character: a flag of ~30 000 bytes overflowed the stack (SIGSEGV). No flag,
  // value or path comes near the bound (PATH_MAX is 4096). The program's own arguments
  // are passed on as they are.
  constexpr std::size_t kMaxFlagBytes = 8192;
  for (const auto& arg : own) {
    if (arg.size() > kMaxFlagBytes) {
      throw LaunchError("ddprun flag '" + arg.substr(0, 40) + "...': expected at most " +
                        std::to_string(kMaxFlagBytes) + " bytes, found " +
                        std::to_string(arg.size()) +
                        ". No flag, value or path is that long. Run 'ddprun --help' for the "
                        "options.");
    }
  }
  auto cli = makeCli();
  std::vector<char*> ownArgv;
  for (auto& a : own) ownArgv.push_back(a.data());
  cxxopts::ParseResult r;
  try {
    r = cli.parse(static_cast<int>(ownArgv.size()), ownArgv.data());
  } catch (const cxxopts::exceptions::exception& e) {
    throw LaunchError(std::string(e.what()) + ". Run 'ddprun --help' for the options.");
  }
  if (r.count("help")) {
    std::cout << cli.help({"", "torchrun compatibility"}) << "\n" << kProgramHelp << std::endl;
    std::exit(ddp::kExitOk);
  }
  if (r.count("flags-json")) {
    std::cout << ddp::launcher::flagTableJson() << std::endl;
    std::exit(ddp::kExitOk);
  }
  if (r.count("print-completion")) {
    std::cout << completionScript(r["print-completion"].as<std::string>()) << std::flush;
    std::exit(ddp::kExitOk);
  }
  if (r.count("version")) {
    std::cout << "ddprun " << DDPRUN_VERSION << " (built against torch " << DDPRUN_TORCH_VERSION
              << ", CUDA/NCCL " << (HAVE_NCCL ? "on" : "off") << ")" << std::endl;
    std::exit(ddp::kExitOk);
  }
  ddp::launcher::GivenFlags given;
  for (const auto& spec : ddp::launcher::launchFlagSpecs()) {
    if (r.count(spec.name))
      given[spec.name] = spec.valueName.empty() ? "" : r[spec.name].as<std::string>();
  }
  const auto environment = ddp::env::currentEnvironment();
  const auto options = ddp::launcher::readLaunchCommand(given, environment);
  ddp::log::setup("launcher", ddp::log::resolveLevel(options.logLevel));
  for (const auto& ignored : options.ignoredFlags) ddp::log::warn("launcher", "{}", ignored);
  checkLogDir(options);

  Command command;
  auto& spec = command.spec;
  // Note [Counting GPUs]: the driver is asked only where the GPU count decides something.
  ddp::launcher::GpuProbe gpuProbe;
  const auto nprocText = options.plan.nprocPerNode
                             ? options.plan.nprocPerNode
                             : ddp::env::lookup(environment, ddp::env::var::kPetNprocPerNode);
  gpuProbe.askDriver = nprocText && (*nprocText == "auto" || *nprocText == "gpu");
  const auto devices = ddp::launcher::detectDevices(environment, gpuProbe);
  if (!devices.gpuWarning.empty()) ddp::log::warn("launcher", "{}", devices.gpuWarning);
  spec.plan = ddp::launcher::resolveLaunchPlan(options.plan, environment, devices);
  if (spec.plan.standalone && spec.plan.masterPort == 0) spec.plan.masterPort = freeLoopbackPort();
  spec.env.rendezvousTimeoutSeconds = options.rendezvousTimeoutSeconds;
  spec.env.hangTimeoutSeconds = options.hangTimeoutSeconds;
  command.monitor.port = options.metricsPort;
  command.monitor.host = options.metricsHost;
  spec.env.metricsFiles = options.metricsPort != 0 ||
                          ddp::metrics::TrainJobProgressOptions::fromEnvironment().has_value();
  // The bar is rank 0's, drawn through this terminal (Note [Live output]); without one the
  // workers draw none, whatever their own stderr is.
  if (!options.progress) {
    spec.env.progressBar = false;
  } else if (isatty(STDERR_FILENO)) {
    spec.env.progressBar = true;
  }
  spec.env.backend = options.backend;
  spec.env.role = options.role;
  spec.env.virtualLocalRank = options.virtualLocalRank;
  spec.env.visibleDevices = ddp::env::lookup(environment, ddp::env::var::kCudaVisibleDevices);
  ddp::launcher::checkVirtualLocalRanks(spec.plan, spec.env);
  command.signalsToHandle = options.signalsToHandle;
  spec.gracePeriod = std::chrono::seconds(options.gracePeriodSeconds);
  spec.output.redirects = options.redirects;
  spec.output.localRanksShown = options.localRanksFilter;
  spec.output.linePrefixTemplate = options.linePrefixTemplate;
  spec.output.hostname = hostName();
  spec.output.roleName = options.role;  // ${role_name} in --log-line-prefix-template
  command.errorFile = options.errorFile;
  command.dryRun = options.dryRun;
  command.monitorInterval = options.monitorInterval;
  if (options.rendezvous) {
    auto config = *options.rendezvous;
    config.minNodes = spec.plan.nnodes;
    config.maxNodes = spec.plan.maxNodes;
    config.localWorkers = spec.plan.nprocPerNode;
    spec.plan.rendezvousEndpoint = config.endpoint();
    command.rendezvous = config;
  }
  spec.env.pythonUnbuffered =
      !ddp::env::lookup(environment, ddp::env::var::kPythonUnbuffered).has_value();
  if (!command.dryRun) {
    std::string logDir = options.logDir;
    if (logDir.empty() && (options.redirects.any() || options.tee.any())) {
      logDir = makeTemporaryLogDir();
    }
    if (!logDir.empty()) {
      spec.output.runLogDir = ddp::launcher::makeRunLogDir(logDir, spec.plan.runId);
      if (command.errorFile.empty()) command.errorFile = spec.output.runLogDir + "/error.json";
    }
  }
  const auto& shown = options.localRanksFilter;
  if (!shown.empty() && *shown.begin() >= spec.plan.nprocPerNode) {
    ddp::log::warn("launcher",
                   "--local-ranks-filter names no local rank of this node's {} workers (0..{}): "
                   "no worker output reaches the console",
                   spec.plan.nprocPerNode, spec.plan.nprocPerNode - 1);
  }

  // Before any worker starts: a missing script is one usage error, not N worker failures.
  command.program = ddp::launcher::resolveWorkerProgram(program, options.program, environment);
  spec.argv = command.program.argv;
  if (!ddp::env::lookup(environment, ddp::env::var::kOmpNumThreads)) {
    const int cores = devices.cpus;
    spec.env.ompNumThreads = std::max(1, cores / spec.plan.nprocPerNode);
    command.ompNote = fmt::format(
        " omp_num_threads={} (OMP_NUM_THREADS is unset: cores={} / {} "
        "workers)",
        spec.env.ompNumThreads, cores, spec.plan.nprocPerNode);
  }
  return command;
}

}  // namespace

int main(int argc, char** argv) {
  Command command;
  try {
    command = parseCommand(argc, argv);
  } catch (const std::exception& e) {
    // LaunchError, env::EnvError, a bad log level: permanent (Note [Two error families]).
    std::cerr << "ddprun: " << e.what() << std::endl;
    return ddp::exitCodeFor(e);
  }
  auto& spec = command.spec;
  if (command.dryRun) {
    std::cout << ddp::launcher::describePlanJson(spec.plan, command.program, spec.env) << std::endl;
    return ddp::kExitOk;
  }
  // The start-up summary: this line and one per attempt (worker_group.cpp).
  const auto& plan = spec.plan;
  if (command.rendezvous) {
    ddp::log::info("launcher",
                   "source={} rdzv_backend=c10d endpoint={} run_id={} nnodes={}:{} "
                   "nproc_per_node={} max_restarts={} program={} program_kind={}{}{}",
                   plan.source, plan.rendezvousEndpoint, plan.runId, plan.nnodes, plan.maxNodes,
                   plan.nprocPerNode, plan.maxRestarts, spec.argv.front(),
                   ddp::launcher::programKindName(command.program.kind), command.ompNote,
                   spec.output.runLogDir.empty() ? "" : " log_dir=" + spec.output.runLogDir);
  } else {
    ddp::log::info("launcher",
                   "source={} nnodes={} node_rank={} nproc_per_node={} world_size={} "
                   "master={}:{} max_restarts={} program={} program_kind={}{}{}",
                   plan.source, plan.nnodes, plan.nodeRank, plan.nprocPerNode, plan.worldSize(),
                   plan.masterAddr, plan.masterPort, plan.maxRestarts, spec.argv.front(),
                   ddp::launcher::programKindName(command.program.kind), command.ompNote,
                   spec.output.runLogDir.empty() ? "" : " log_dir=" + spec.output.runLogDir);
  }
  ddp::launcher::RunResult result;
  ddp::launcher::LaunchPlan lastPlan = plan;  // the last round's, for the error file
  int stopSignal = 0;                         // a stop signal that came while the rendezvous waited
  try {
    // Note [Nothing outlives the launcher] in launcher/group_guardian.h: what a worker
    // leaves behind is adopted and reaped here, and killed by the guardian if ddprun dies
    // without stopping it. The guardian is forked while this process has one thread.
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    ddp::launcher::GroupGuardian guardian;
    // Before the rendezvous module starts its threads, so that they inherit the blocked
    // signals (Note [Worker processes]).
    ddp::launcher::SignalChannel signals(command.signalsToHandle);
    // Note [Metrics endpoint]: up before the rendezvous, so that /healthz answers while a
    // node waits for the others; its threads inherit the blocked signals.
    std::optional<ddp::metrics::NodeMonitor> monitor;
    if (spec.env.metricsFiles) {
      monitor.emplace(command.monitor);
      monitor->update([&](ddp::metrics::NodeView& node) {
        node.worldSize = plan.worldSize();
        node.hangTimeoutSeconds = spec.env.hangTimeoutSeconds;
      });
      spec.monitor = &*monitor;
      if (monitor->port() != 0) {
        ddp::log::info("launcher",
                       "event=metrics_served address={}:{} paths=/metrics,/healthz,/readyz",
                       command.monitor.host, monitor->port());
      }
    }
    if (command.rendezvous) {
      auto config = *command.rendezvous;
      config.pendingStopSignal = [&] {
        for (int s : stopSignal ? std::vector<int>{} : signals.drain()) {
          if (s != SIGCHLD && !stopSignal) stopSignal = s;
        }
        return stopSignal;
      };
      auto rendezvous = ddp::launcher::loadC10dRendezvous(config);
      const ddp::launcher::MembershipMonitor monitor{
          command.monitorInterval, [&] { return rendezvous->membershipChange(); }};
      result = ddp::launcher::runElastic(
          plan, *rendezvous, [&](const ddp::launcher::LaunchPlan& roundPlan, int restartCount) {
            auto roundSpec = spec;
            roundSpec.plan = lastPlan = roundPlan;
            return ddp::launcher::runAttempt(roundSpec, restartCount, signals, guardian, &monitor);
          });
    } else {
      result = ddp::launcher::runWithRestarts(plan.maxRestarts, [&](int restartCount) {
        return ddp::launcher::runAttempt(spec, restartCount, signals, guardian);
      });
    }
  } catch (const std::exception& e) {
    std::cerr << "ddprun: " << e.what() << std::endl;
    return stopSignal ? 128 + stopSignal : ddp::exitCodeFor(e);
  }
  if (stopSignal) result.exitCode = 128 + stopSignal;  // it ended a wait for a new round
  if (result.failure) {
    std::cerr << ddp::launcher::failureReportText(*result.failure, result.exitCode);
    if (!command.errorFile.empty()) {
      const auto json =
          ddp::launcher::failureReportJson(*result.failure, lastPlan, result.exitCode);
      const auto error = ddp::launcher::writeErrorFile(command.errorFile, json);
      if (!error.empty()) std::cerr << "ddprun: " << error << std::endl;
    }
  }
  return result.exitCode;
}
