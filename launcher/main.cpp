// ddprun: starts the worker processes of one node with torchrun's environment
// (RANK, LOCAL_RANK, WORLD_SIZE, ...), watches them and tears the group down on the
// first failure or on SIGTERM/SIGINT.
//
//   ddprun [options] [--] PROGRAM [ARGS...]
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <set>
#include <thread>

#include <cxxopts.hpp>

#include "launcher/local_launcher.h"
#include "runtime/config.h"
#include "runtime/exit_codes.h"
#include "runtime/log/logging.h"

namespace {

class UsageError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Options that take a value; needed to find where the launcher's options end and the
// program begins without "--" (torchrun accepts `torchrun -n 2 train.py --lr 1`).
const std::set<std::string> kValueOptions = {
    "--nproc-per-node", "--nproc_per_node", "--nnodes", "--node-rank", "--node_rank",
    "--master-addr", "--master_addr", "--master-port", "--master_port", "--grace-period",
    "--log-level"};

int parseInt(const std::string& flag, const std::string& text, int min, int max) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    throw UsageError(flag + "=" + text + ": expected an integer in [" + std::to_string(min) +
                     ", " + std::to_string(max) + "]");
  }
  return value;
}

// `auto`: one process per visible GPU (CUDA_VISIBLE_DEVICES, else /dev/nvidiaN), else 1.
int visibleGpuCount() {
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::string list(visible);
    if (list.empty()) return 0;
    return static_cast<int>(std::count(list.begin(), list.end(), ',')) + 1;
  }
  int count = 0;
  for (int i = 0; i < 64; ++i) {
    if (std::filesystem::exists("/dev/nvidia" + std::to_string(i))) ++count;
  }
  return count;
}

int freeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
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

ddp::launcher::WorkerSpec parseArgs(int argc, char** argv) {
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

  cxxopts::Options cli("ddprun", "Starts PROGRAM as the data-parallel workers of this node.\n"
                                 "  ddprun [options] [--] PROGRAM [ARGS...]");
  // clang-format off
  cli.add_options()
    ("nproc-per-node,nproc_per_node", "workers on this node: a number, or auto (one per "
     "visible GPU, else 1)", cxxopts::value<std::string>()->default_value("1"))
    ("nnodes", "number of nodes", cxxopts::value<std::string>()->default_value("1"))
    ("node-rank,node_rank", "rank of this node in [0, nnodes)",
     cxxopts::value<std::string>()->default_value("0"))
    ("master-addr,master_addr", "address of the node that hosts rank 0",
     cxxopts::value<std::string>()->default_value("127.0.0.1"))
    ("master-port,master_port", "port of rank 0's TCPStore",
     cxxopts::value<std::string>()->default_value("29500"))
    ("standalone", "single node on loopback with a free port")
    ("grace-period", "seconds between SIGTERM and SIGKILL at teardown",
     cxxopts::value<std::string>()->default_value("10"))
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
    throw UsageError(std::string(e.what()) + ". Run 'ddprun --help' for the options.");
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

  ddp::launcher::WorkerSpec spec;
  const auto nproc = r["nproc-per-node"].as<std::string>();
  spec.nprocPerNode = nproc == "auto" ? std::max(1, visibleGpuCount())
                                      : parseInt("--nproc-per-node", nproc, 1, 1024);
  spec.nnodes = parseInt("--nnodes", r["nnodes"].as<std::string>(), 1, 65536);
  spec.nodeRank = parseInt("--node-rank", r["node-rank"].as<std::string>(), 0, 65535);
  if (spec.nodeRank >= spec.nnodes) {
    throw UsageError("--node-rank=" + std::to_string(spec.nodeRank) + " must be < --nnodes=" +
                     std::to_string(spec.nnodes));
  }
  spec.masterAddr = r["master-addr"].as<std::string>();
  spec.masterPort = parseInt("--master-port", r["master-port"].as<std::string>(), 1, 65535);
  spec.gracePeriod =
      std::chrono::seconds(parseInt("--grace-period", r["grace-period"].as<std::string>(), 0,
                                    3600));
  if (r.count("standalone")) {
    if (spec.nnodes != 1) throw UsageError("--standalone means one node; drop --nnodes");
    spec.masterAddr = "127.0.0.1";
    spec.masterPort = freeLoopbackPort();
  }
  if (program.empty()) {
    throw UsageError("no PROGRAM given: ddprun [options] [--] PROGRAM [ARGS...]");
  }
  spec.argv = program;
  if (!std::getenv("OMP_NUM_THREADS")) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    spec.ompNumThreads = std::max(1, cores / spec.nprocPerNode);
    ddp::log::info("launcher", "OMP_NUM_THREADS is unset; giving each of the {} workers {} "
                   "(cores={} / workers)", spec.nprocPerNode, spec.ompNumThreads, cores);
  }
  return spec;
}

}  // namespace

int main(int argc, char** argv) {
  ddp::launcher::WorkerSpec spec;
  try {
    spec = parseArgs(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "ddprun: " << e.what() << std::endl;
    return ddp::kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "ddprun: " << e.what() << std::endl;
    return ddp::kExitUsage;
  }
  ddp::log::info("launcher", "nproc_per_node={} nnodes={} node_rank={} master={}:{} program={}",
                 spec.nprocPerNode, spec.nnodes, spec.nodeRank, spec.masterAddr,
                 spec.masterPort, spec.argv.front());
  const auto result = ddp::launcher::runWorkerGroup(spec);
  return result.exitCode;
}
