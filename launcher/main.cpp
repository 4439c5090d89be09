// ddprun: starts the worker processes of one node with torchrun's environment (RANK,
// LOCAL_RANK, WORLD_SIZE, ...), prefixes their output with the rank, tears the group down
// on the first failure or on SIGTERM/SIGINT, and restarts it up to --max-restarts.
//
//   ddprun [options] [--] PROGRAM [ARGS...]
//
// Without flags, the node's place in the job comes from the environment (Note [Node-level
// resolution] in launcher/launch_plan.h).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <iostream>
#include <set>

#include <cxxopts.hpp>

#include "launcher/failure_report.h"
#include "launcher/launch_plan.h"
#include "launcher/worker_group.h"
#include "runtime/config.h"
#include "runtime/exit_codes.h"
#include "runtime/log/logging.h"

namespace {

using ddp::launcher::LaunchError;

// Options that take a value; needed to find where the launcher's options end and the
// program begins without "--" (torchrun accepts `torchrun -n 2 train.py --lr 1`).
const std::set<std::string> kValueOptions = {
    "--nproc-per-node", "--nproc_per_node", "--nnodes", "--node-rank", "--node_rank",
    "--master-addr", "--master_addr", "--master-port", "--master_port", "--max-restarts",
    "--max_restarts", "--rdzv-timeout", "--rdzv_timeout", "--backend", "--grace-period",
    "--log-dir", "--log_dir", "--redirects", "-r", "--error-file", "--log-level"};

int parseInt(const std::string& flag, const std::string& text, int min, int max) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    throw LaunchError(flag + "=" + text + ": expected an integer in [" + std::to_string(min) +
                      ", " + std::to_string(max) + "]");
  }
  return value;
}

// torchrun's --nnodes takes N or MIN:MAX; a fixed count only.
int parseNnodes(const std::string& text) {
  const auto colon = text.find(':');
  if (colon == std::string::npos) return parseInt("--nnodes", text, 1, 65536);
  const int min = parseInt("--nnodes", text.substr(0, colon), 1, 65536);
  const int max = parseInt("--nnodes", text.substr(colon + 1), 1, 65536);
  if (min != max) {
    throw LaunchError("--nnodes=" + text + ": elastic ranges are not supported; give a fixed "
                      "node count N (or N:N)");
  }
  return min;
}

int freeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    throw std::runtime_error("--standalone: cannot bind a port on 127.0.0.1");
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

struct Command {
  ddp::launcher::WorkerGroupSpec spec;
  std::string errorFile;
  bool dryRun = false;
};

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
    if (kValueOptions.count(arg) && i + 1 < argc) own.push_back(argv[++i]);
  }

  cxxopts::Options cli("ddprun",
                       "Starts PROGRAM as the data-parallel workers of this node, watches them, "
                       "and restarts the group on failure.\n"
                       "  ddprun [options] [--] PROGRAM [ARGS...]\n"
                       "Unset options come from the environment (PET_*, RANK/WORLD_SIZE/"
                       "MASTER_*, OMPI_*/PMI_*): see the README.");
  // clang-format off
  cli.add_options()
    ("nproc-per-node,nproc_per_node", "workers on this node: N, auto (one per visible GPU, "
     "else 1), gpu or cpu  [env PET_NPROC_PER_NODE; default 1]", cxxopts::value<std::string>())
    ("nnodes", "number of nodes, N or N:N  [env PET_NNODES, WORLD_SIZE, OMPI_COMM_WORLD_SIZE; "
     "default 1]", cxxopts::value<std::string>())
    ("node-rank,node_rank", "rank of this node in [0, nnodes)  [env PET_NODE_RANK, RANK, "
     "OMPI_COMM_WORLD_RANK; default 0]", cxxopts::value<std::string>())
    ("master-addr,master_addr", "host of the node with rank 0  [env MASTER_ADDR, "
     "PET_MASTER_ADDR; default 127.0.0.1]", cxxopts::value<std::string>())
    ("master-port,master_port", "port of rank 0's TCPStore  [env MASTER_PORT, "
     "PET_MASTER_PORT; default 29500]", cxxopts::value<std::string>())
    ("standalone", "one node on loopback with a free port  [env PET_STANDALONE]")
    ("max-restarts,max_restarts", "restarts of the worker group after a failure  "
     "[env PET_MAX_RESTARTS; default 0]", cxxopts::value<std::string>())
    ("rdzv-timeout,rdzv_timeout", "seconds the workers wait for the master (sets "
     "DDPRUN_RDZV_TIMEOUT; 0: the workers' default, 300)",
     cxxopts::value<std::string>()->default_value("0"))
    ("backend", "gloo, nccl or auto (sets DDPRUN_BACKEND for the workers; empty: theirs)",
     cxxopts::value<std::string>()->default_value(""))
    ("grace-period", "seconds between SIGTERM and SIGKILL at teardown; keep it below the "
     "pod's terminationGracePeriodSeconds", cxxopts::value<std::string>()->default_value("30"))
    ("log-dir,log_dir", "also write each worker's output to "
     "DIR/attempt_<restart>/rank_<rank>/{stdout,stderr}.log", cxxopts::value<std::string>())
    ("r,redirects", "streams that go to the log files only, not the console: 0 none, "
     "1 stdout, 2 stderr, 3 both (needs --log-dir)",
     cxxopts::value<std::string>()->default_value("0"))
    ("error-file", "write the failure report as JSON here (e.g. /dev/termination-log)  "
     "[env DDPRUN_ERROR_FILE; default <log-dir>/error.json with --log-dir]",
     cxxopts::value<std::string>())
    ("dry-run", "print the resolved plan and every worker's environment as JSON; start "
     "nothing")
    ("log-level", "debug, info, warn, error", cxxopts::value<std::string>()->default_value("info"))
    ("version", "print the version and exit")
    ("h,help", "print this help");
  // clang-format on
  std::vector<char*> ownArgv;
  for (auto& a : own) ownArgv.push_back(a.data());
  cxxopts::ParseResult r;
  try {
    r = cli.parse(static_cast<int>(ownArgv.size()), ownArgv.data());
  } catch (const cxxopts::exceptions::exception& e) {
    throw LaunchError(std::string(e.what()) + ". Run 'ddprun --help' for the options.");
  }
  if (r.count("help")) {
    std::cout << cli.help() << std::endl;
    std::exit(ddp::kExitOk);
  }
  if (r.count("version")) {
    std::cout << "ddprun " << DDPRUN_VERSION << " (built against torch " << DDPRUN_TORCH_VERSION
              << ", CUDA/NCCL " << (HAVE_NCCL ? "on" : "off") << ")" << std::endl;
    std::exit(ddp::kExitOk);
  }
  ddp::log::setup("launcher", ddp::log::parseLevel(r["log-level"].as<std::string>()));

  ddp::launcher::LaunchFlags flags;
  if (r.count("nproc-per-node")) flags.nprocPerNode = r["nproc-per-node"].as<std::string>();
  if (r.count("nnodes")) flags.nnodes = parseNnodes(r["nnodes"].as<std::string>());
  if (r.count("node-rank")) {
    flags.nodeRank = parseInt("--node-rank", r["node-rank"].as<std::string>(), 0, 65535);
  }
  if (r.count("master-addr")) flags.masterAddr = r["master-addr"].as<std::string>();
  if (r.count("master-port")) {
    flags.masterPort = parseInt("--master-port", r["master-port"].as<std::string>(), 1, 65535);
  }
  if (r.count("max-restarts")) {
    flags.maxRestarts = parseInt("--max-restarts", r["max-restarts"].as<std::string>(), 0, 1000);
  }
  flags.standalone = r.count("standalone") > 0;

  const auto environment = ddp::env::currentEnvironment();
  Command command;
  auto& spec = command.spec;
  const auto devices = ddp::launcher::detectDevices(environment);
  spec.plan = ddp::launcher::resolveLaunchPlan(flags, environment, devices);
  if (spec.plan.standalone && spec.plan.masterPort == 0) spec.plan.masterPort = freeLoopbackPort();
  spec.env.rendezvousTimeoutSeconds =
      parseInt("--rdzv-timeout", r["rdzv-timeout"].as<std::string>(), 0, 86400);
  spec.env.backend = r["backend"].as<std::string>();
  if (!spec.env.backend.empty() && spec.env.backend != "gloo" && spec.env.backend != "nccl" &&
      spec.env.backend != "auto") {
    throw LaunchError("--backend=" + spec.env.backend + ": expected gloo, nccl or auto");
  }
  spec.gracePeriod = std::chrono::seconds(
      parseInt("--grace-period", r["grace-period"].as<std::string>(), 0, 3600));
  if (r.count("log-dir")) spec.output.logDir = r["log-dir"].as<std::string>();
  const int redirects = parseInt("--redirects", r["redirects"].as<std::string>(), 0, 3);
  if (redirects != 0 && spec.output.logDir.empty()) {
    throw LaunchError("--redirects=" + std::to_string(redirects) +
                      " sends output to the log files only, but there is no --log-dir");
  }
  spec.output.redirectStdout = (redirects & 1) != 0;
  spec.output.redirectStderr = (redirects & 2) != 0;
  if (r.count("error-file")) {
    command.errorFile = r["error-file"].as<std::string>();
  } else if (const char* fromEnv = std::getenv("DDPRUN_ERROR_FILE"); fromEnv && *fromEnv) {
    command.errorFile = fromEnv;
  } else if (!spec.output.logDir.empty()) {
    command.errorFile = spec.output.logDir + "/error.json";
  }
  command.dryRun = r.count("dry-run") > 0;

  if (program.empty()) {
    throw LaunchError("no PROGRAM given: ddprun [options] [--] PROGRAM [ARGS...]");
  }
  spec.argv = program;
  if (!std::getenv("OMP_NUM_THREADS")) {
    const int cores = devices.cpus;
    spec.env.ompNumThreads = std::max(1, cores / spec.plan.nprocPerNode);
    if (!command.dryRun) {
      ddp::log::info("launcher", "OMP_NUM_THREADS is unset; giving each of the {} workers {} "
                     "(cores={} / workers)", spec.plan.nprocPerNode, spec.env.ompNumThreads,
                     cores);
    }
  }
  return command;
}

}  // namespace

int main(int argc, char** argv) {
  Command command;
  try {
    command = parseCommand(argc, argv);
  } catch (const std::exception& e) {
    // LaunchError, env::EnvError, a bad --log-level: all permanent usage errors.
    std::cerr << "ddprun: " << e.what() << std::endl;
    return ddp::kExitUsage;
  }
  auto& spec = command.spec;
  if (command.dryRun) {
    std::cout << ddp::launcher::describePlanJson(spec.plan, spec.argv, spec.env) << std::endl;
    return ddp::kExitOk;
  }
  const auto& plan = spec.plan;
  ddp::log::info("launcher", "source={} nnodes={} node_rank={} nproc_per_node={} world_size={} "
                 "master={}:{} max_restarts={} program={}", plan.source, plan.nnodes,
                 plan.nodeRank, plan.nprocPerNode, plan.worldSize(), plan.masterAddr,
                 plan.masterPort, plan.maxRestarts, spec.argv.front());
  ddp::launcher::RunResult result;
  try {
    ddp::launcher::SignalChannel signals;
    result = ddp::launcher::runWithRestarts(plan.maxRestarts, [&](int restartCount) {
      return ddp::launcher::runAttempt(spec, restartCount, signals);
    });
  } catch (const std::exception& e) {
    std::cerr << "ddprun: " << e.what() << std::endl;
    return ddp::kExitTransient;
  }
  if (result.failure) {
    std::cerr << ddp::launcher::failureReportText(*result.failure, result.exitCode);
    if (!command.errorFile.empty()) {
      const auto json = ddp::launcher::failureReportJson(*result.failure, plan, result.exitCode);
      const auto error = ddp::launcher::writeErrorFile(command.errorFile, json);
      if (!error.empty()) std::cerr << "ddprun: " << error << std::endl;
    }
  }
  return result.exitCode;
}
