#include "runtime/distributed.h"

#include <cxxabi.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <typeinfo>
#include <vector>

#include <unistd.h>

#include <c10/util/Backtrace.h>
#include <c10/util/Logging.h>
#include <fmt/format.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "runtime/comm/backend_choice.h"
#include "runtime/config.h"
#include "runtime/env/env_readers.h"
#include "runtime/env/host_name.h"
#include "runtime/env/value_parser.h"
#include "runtime/env/variables.h"
#include "runtime/log/logging.h"
#include "runtime/memory/host_allocator.h"
#include "runtime/metrics/node_monitor.h"
#include "runtime/metrics/training_metrics.h"
#if HAVE_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace ddp {
namespace {

// A timeout in seconds from `variable`, if set (env::parseSeconds: at most a week, so the
// deadline it becomes cannot overflow).
std::optional<std::chrono::milliseconds> secondsFromEnv(const env::EnvMap& environment,
                                                        const std::string& variable) {
  auto value = env::lookup(environment, variable);
  if (!value) return std::nullopt;
  const auto parsed = env::parseSeconds(*value);
  if (!parsed.value) {
    throw env::EnvError(variable, *value, env::secondsExpectation(), parsed.found,
                        "Fix " + variable + " where it is set (launcher, pod spec or shell).");
  }
  return parsed.value;
}

// Note [Waiting for the other ranks] in comm/process_group.h: the ranks that did not join,
// what that usually means, what to do.
rendezvous::RendezvousError groupJoinError(const Distributed& d, const c10::DistError& cause,
                                           std::chrono::steady_clock::duration waited) {
  const double seconds = std::chrono::duration<double>(waited).count();
  std::optional<std::vector<int>> missing;
  bool storeGone = false;
  try {
    missing = comm::ranksWithoutGlooAddress(d.store, d.env.rank, d.env.worldSize);
  } catch (const std::exception&) {
    storeGone = true;
  }
  std::string what;
  if (missing && !missing->empty()) {
    constexpr std::size_t kShown = 8;  // one line at any world size
    std::string ranks;
    for (std::size_t i = 0; i < missing->size() && i < kShown; ++i) {
      ranks += (i == 0 ? "" : ", ") + std::to_string((*missing)[i]);
    }
    if (missing->size() > kShown) ranks += fmt::format(", ... ({} in all)", missing->size());
    what = fmt::format(
        "the process group did not form: {} {} of {} did not join within {:.1f} s ({} not in "
        "the rendezvous store at {}:{})",
        missing->size() == 1 ? "rank" : "ranks", ranks, d.env.worldSize, seconds,
        missing->size() == 1 ? "its Gloo address is" : "their Gloo addresses are", d.master.host,
        d.master.port);
  } else if (storeGone && d.env.rank != 0) {
    what = fmt::format(
        "the process group did not form: rank {} waited {:.1f} s for the other ranks, and rank "
        "0's rendezvous store at {}:{} no longer answers (rank 0 gave up first, or exited; its "
        "log names the ranks that did not join)",
        d.env.rank, seconds, d.master.host, d.master.port);
  } else {
    what = fmt::format("rank {} could not form the process group after {:.1f} s: {}", d.env.rank,
                       seconds, cause.what_without_backtrace());
  }
  return rendezvous::RendezvousError(fmt::format(
      "{}.\n---> HINT: a rank joins when its ddp::init reaches the process group. One that "
      "did not may not have started (a pod still Pending; WORLD_SIZE={} ranks must run), may "
      "have crashed first (see its log and exit code), or may wait for another store "
      "(MASTER_ADDR / MASTER_PORT differ between ranks). If it runs and reports Gloo "
      "connection errors: GLOO_SOCKET_IFNAME names an interface the other ranks cannot reach, "
      "a NetworkPolicy or firewall blocks the ranks' Gloo ports (random ports, not "
      "MASTER_PORT), or its host name resolves to an address the others cannot reach. Start "
      "every rank, or wait longer with --rdzv-timeout or DDPRUN_RDZV_TIMEOUT (seconds).",
      what, d.env.worldSize));
}

// Note [C10 backtraces]
// ~~~~~~~~~~~~~~~~~~~~~
// c10 captures a C++ backtrace into every c10::Error it constructs, and c10d logs some
// errors whole as warnings of its own, which reach a job's log untouched:
//   [W... TCPStore.cpp:138] [c10d] recvValueWithTimeout failed on SocketImpl(...): Failed to
//   recv, got 0 bytes. ... Exception raised from recvBytes at .../Utils.hpp:786 (most recent
//   call first): frame #0: c10::Error::Error(...) ... frame #20: ...
// errorMessage() strips the backtrace from what we print, but c10d's own lines need c10
// not to capture one: this fetcher captures it at the debug log level only (whoever debugs
// ddprun or LibTorch wants the frames) and hands c10 an empty one otherwise. c10 still adds
// its one "Exception raised from <function> at <file>:<line>" line; the frames are gone.
void installBacktraceFetcher() {
  static std::once_flag once;
  std::call_once(once, [] {
    c10::SetStackTraceFetcher([]() -> c10::Backtrace {
      if (log::currentLevel() == log::Level::kDebug) {
        return c10::get_lazy_backtrace(/*frames_to_skip=*/1);
      }
      static const auto kNone = std::make_shared<c10::PrecomputedLazyValue<std::string>>("");
      return kNone;
    });
  });
}

bool cudaUsable() {
#if HAVE_CUDA
  return torch::cuda::is_available();
#else
  return false;
#endif
}

// The ConfigError for `what` (e.g. "backend 'nccl'") where this process can use no CUDA
// device: a CUDA-off build, or the reason the CUDA runtime gave; `instead` is what to use.
void requireCuda(std::string_view what, std::string_view instead) {
  if (!HAVE_CUDA) {
    throw ConfigError(fmt::format(
        "{} requested, but this build has no CUDA/NCCL (DDPRUN_WITH_CUDA=OFF). ---> HINT: use "
        "{}, or a CUDA build.",
        what, instead));
  }
  if (!cudaUsable()) {
    throw ConfigError(fmt::format(
        "{} needs a CUDA device, and this process can use none: {} ---> HINT: use {} or auto, "
        "or fix what the previous sentence names.",
        what, comm::describeCudaProblem(comm::probeCuda()), instead));
  }
}

}  // namespace

comm::Backend resolveBackend(const std::string& name) {
  if (name == "gloo") return comm::Backend::kGloo;
  if (name == "auto") return cudaUsable() ? comm::Backend::kNccl : comm::Backend::kGloo;
  if (name == "nccl") {
    requireCuda("backend 'nccl'", "--backend gloo (CPU)");
    return comm::Backend::kNccl;
  }
  throw ConfigError(fmt::format("unknown backend '{}': expected gloo, nccl or auto", name));
}

c10::Device resolveDevice(const std::string& name, comm::Backend backend, int localRank) {
  const bool nccl = backend == comm::Backend::kNccl;
  if (name == "auto") {
    return nccl ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(localRank))
                : c10::Device(c10::kCPU);
  }
  if (name == "cpu") {
    if (nccl) {
      throw ConfigError(
          "device 'cpu' with backend 'nccl': NCCL reduces CUDA tensors only. ---> HINT: use "
          "--device cuda or auto with nccl, or --backend gloo for the CPU.");
    }
    return c10::Device(c10::kCPU);
  }
  if (name == "cuda") {
    requireCuda("device 'cuda'", "--device cpu");
    int index = localRank;
#if HAVE_CUDA
    // Under Gloo ranks may share a device: NCCL refuses two ranks on one device.
    if (!nccl) index = localRank % static_cast<int>(torch::cuda::device_count());
#endif
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw ConfigError(fmt::format("unknown device '{}': expected cpu, cuda or auto", name));
}

// Note [Training metrics]: ddprun names this rank's metrics file. Under mpirun without
// ddprun nobody does: the node's ranks write into a directory of their own (keyed by the
// job's master endpoint, so that two jobs on one machine never mix) and the local rank 0
// serves it (Note [Metrics endpoint]) on DDPRUN_METRICS_PORT, as ddprun would.
namespace {
void startMetricsFile(Distributed& d, const env::EnvMap& environment) {
  metrics::setIdentity(d.env.rank, d.env.localRank, d.env.worldSize);
  if (const auto file = env::lookup(environment, env::var::kMetricsFile); file && !file->empty()) {
    d.metricsExporter = std::make_unique<metrics::Exporter>(*file);
  }
}

// Under mpirun without ddprun (the directory needs the master endpoint the rendezvous found).
void startMetrics(Distributed& d, const env::EnvMap& environment,
                  std::optional<std::chrono::milliseconds> hangTimeout) {
  if (d.metricsExporter) return;
  const bool mpi = d.env.source == env::EnvSource::kOpenMpi || d.env.source == env::EnvSource::kPmi;
  if (!mpi) return;
  const auto port = env::detail::readInt(environment, env::var::kMetricsPort, 0, 65535);
  const int metricsPort = port ? port->value : metrics::kDefaultMetricsPort;
  if (metricsPort == 0) return;
  const auto dir = std::filesystem::temp_directory_path() /
                   fmt::format("ddprun-metrics-{}-{}-{}", getuid(), d.master.host, d.master.port);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    log::warn("metrics", "event=metrics_not_written dir={} cause=\"{}\"", dir.string(),
              error.message());
    return;
  }
  d.metricsExporter =
      std::make_unique<metrics::Exporter>((dir / fmt::format("rank-{}.json", d.env.rank)).string());
  if (d.env.localRank != 0) return;
  metrics::NodeMonitorOptions options;
  options.port = metricsPort;
  options.host = env::lookup(environment, env::var::kMetricsHost).value_or(options.host);
  options.servedByLauncher = false;
  d.nodeMonitor = std::make_unique<metrics::NodeMonitor>(options);
  d.nodeMonitor->update([&](metrics::NodeView& node) {
    node.metricsDir = dir.string();
    node.worldSize = d.env.worldSize;
    node.rendezvousDone = true;
    node.hangTimeoutSeconds = hangTimeout ? std::chrono::duration<double>(*hangTimeout).count() : 0;
  });
}
}  // namespace

Distributed::Distributed() = default;
Distributed::Distributed(Distributed&&) noexcept = default;
Distributed& Distributed::operator=(Distributed&&) noexcept = default;

Distributed::~Distributed() {
  // Note [Leaving a failed group]. Only while unwinding: a normal end shuts down cleanly.
  if (std::uncaught_exceptions() > 0 && group) {
    log::debug("init", "event=group_left_to_exit (unwinding after an error)");
    static_cast<void>(group.release());
  }
}

Distributed init(const InitOptions& options) {
  installBacktraceFetcher();  // Note [C10 backtraces]
  const env::EnvMap environment = options.environment.value_or(env::currentEnvironment());
  Distributed d;
  d.env = env::resolveClusterEnv(environment);
  log::setRankTag(std::to_string(d.env.rank));
  // Before the rendezvous: ddprun's /readyz reads "starting" from the file while it waits.
  startMetricsFile(d, environment);
  // Before the first step allocates: see Note [Keep freed tensor memory].
  const auto allocatorPlan = memory::planHostAllocator(environment);
  const bool keepsFreedBlocks = memory::applyHostAllocator(allocatorPlan);
  log::debug("init", "event=host_allocator keep_freed_blocks={} reason=\"{}\"", keepsFreedBlocks,
             allocatorPlan.reason);
  // "auto" defers to the launcher's --backend (DDPRUN_BACKEND) before choosing by device.
  const auto launcherBackend = env::lookup(environment, env::var::kBackend);
  comm::BackendChoice backendChoice;
  backendChoice.requested =
      options.backend == "auto" && launcherBackend && !launcherBackend->empty() ? *launcherBackend
                                                                                : options.backend;
  // Note [Device choice]: a CPU run under "auto" is a Gloo run.
  if (options.device == "cpu" && backendChoice.requested == "auto") {
    backendChoice.requested = "gloo";
  }
  backendChoice.local = resolveBackend(backendChoice.requested);
  // A device this rank cannot use fails here, before the rendezvous makes others wait.
  (void)resolveDevice(options.device, backendChoice.local, d.env.localRank);
  d.backend = backendChoice.local;
  const auto rendezvousTimeout =
      options.rendezvousTimeout.value_or(secondsFromEnv(environment, env::var::kRendezvousTimeout)
                                             .value_or(rendezvous::kDefaultRendezvousTimeout));
  const auto collectiveTimeout =
      options.collectiveTimeout.value_or(secondsFromEnv(environment, env::var::kCollectiveTimeout)
                                             .value_or(comm::kDefaultCollectiveTimeout));
  // Start-up lines: rank 0 at info, the others at debug (log::infoOnRankZero); a rank that
  // fails says where it stood in its error.
  log::atLevel(log::infoOnRankZero(d.env.rank), "init",
               "{} backend={} rdzv_timeout_s={} collective_timeout_s={}", env::describe(d.env),
               comm::backendName(d.backend), rendezvousTimeout.count() / 1000.0,
               collectiveTimeout.count() / 1000.0);

  auto rendezvous = rendezvous::connect(d.env, {.timeout = rendezvousTimeout});
  d.store = std::move(rendezvous.store);
  d.master = std::move(rendezvous.master);
  d.mpi = std::move(rendezvous.mpi);

  // Note [One backend for every rank]
  d.backend = comm::agreeOnBackend(*d.store, d.env.rank, env::thisHostName(), backendChoice);
  d.device = resolveDevice(options.device, d.backend, d.env.localRank);
  if (d.device.is_cuda()) {
    comm::checkCudaDeviceSupported(d.device.index());
#if HAVE_CUDA
    c10::cuda::set_device(d.device.index());
#endif
  }

  comm::ProcessGroupOptions groupOptions;
  groupOptions.backend = d.backend;
  groupOptions.timeout = collectiveTimeout;
  groupOptions.joinTimeout = rendezvousTimeout;
  groupOptions.cudaDevice = d.env.localRank;
  const bool watchdog =
      options.watchdog && env::lookup(environment, env::var::kWatchdog).value_or("1") != "0";
  // c10d's flight recorder reads its size once, when the group first records.
  if (watchdog && !std::getenv("TORCH_FR_BUFFER_SIZE") &&
      !std::getenv("TORCH_NCCL_TRACE_BUFFER_SIZE")) {
    setenv("TORCH_FR_BUFFER_SIZE", std::to_string(health::kFlightRecords).c_str(), 0);
  }
  const auto groupStart = std::chrono::steady_clock::now();
  try {
    d.group = comm::createProcessGroup(d.store, d.env.rank, d.env.worldSize, groupOptions);
  } catch (const c10::DistError& e) {
    if (d.backend != comm::Backend::kGloo) throw;  // NCCL connects later (the Note)
    log::debug("init", "event=group_not_formed cause=\"{}\"", e.what_without_backtrace());
    throw groupJoinError(d, e, std::chrono::steady_clock::now() - groupStart);
  }
  if (watchdog) {
    health::attachCollectiveLog(d.group);
    health::WatchdogOptions watch;
    watch.rank = d.env.rank;
    watch.worldSize = d.env.worldSize;
    // Where this rank's own client reached the store (rank 0: its bound address or loopback).
    const auto* tcpStore = dynamic_cast<const c10d::TCPStore*>(d.store.get());
    watch.storeHost = tcpStore ? tcpStore->getHost() : d.master.host;
    watch.storePort = tcpStore ? tcpStore->getPort() : d.master.port;
    watch.hangTimeout = options.hangTimeout ? options.hangTimeout
                                            : secondsFromEnv(environment, env::var::kHangTimeout);
    watch.heartbeatFile = env::lookup(environment, env::var::kHeartbeatFile).value_or("");
    watch.ncclRecords = d.backend == comm::Backend::kNccl;
    d.watchdog = std::make_unique<health::Watchdog>(watch);
  }
  startMetrics(d, environment,
               options.hangTimeout ? options.hangTimeout
                                   : secondsFromEnv(environment, env::var::kHangTimeout));
  log::atLevel(log::infoOnRankZero(d.env.rank), "init",
               "event=group_ready backend={} world_size={} elapsed_s={:.2f} device={}",
               comm::backendName(d.backend), d.env.worldSize,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - groupStart).count(),
               d.device.str());
  return d;
}

bool isPeerLoss(const std::exception& error) {
  if (dynamic_cast<const c10::DistNetworkError*>(&error) != nullptr) return true;
  // Gloo's IoException crosses ProcessGroupGloo as it is; its header is not in the wheel.
  const std::string type = typeid(error).name();
  if (type.find("gloo") != std::string::npos && type.find("IoException") != std::string::npos) {
    return true;
  }
  return textSaysPeerLost(error.what());
}

void writeErrorFile(const std::exception& error) {
  try {
    health::noteFailure(errorMessage(error), isPeerLoss(error));  // Note [Watchdog]
    const auto path = env::lookup(env::currentEnvironment(), env::var::kTorchelasticErrorFile);
    if (!path || path->empty()) return;
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    int status = 0;
    char* demangled = abi::__cxa_demangle(typeid(error).name(), nullptr, nullptr, &status);
    const std::string type = status == 0 && demangled ? demangled : typeid(error).name();
    std::free(demangled);
    nlohmann::json extra = {
        {"py_callstack", ""},
        {"timestamp",
         std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now).count())},
        {"ddprun_time_ns",
         std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count())},
        {"ddprun_peer_loss", isPeerLoss(error)}};
    const auto message = errorMessage(error);
    const nlohmann::json record = {
        {"message", {{"message", type + ": " + errorMessage(error)}, {"extraInfo", extra}}}};
    std::ofstream out(*path, std::ios::trunc);
    out << record.dump() << "\n";
  } catch (...) {
    // On the way out with an error already: the exit code and stderr still tell it.
  }
}

std::string errorMessage(const std::exception& error) {
  if (const auto* c10Error = dynamic_cast<const c10::Error*>(&error)) {
    // The C++ frames help whoever debugs ddprun or LibTorch, not whoever runs a job.
    if (log::currentLevel() == log::Level::kDebug) return c10Error->what();
    return c10Error->what_without_backtrace();
  }
  return error.what();
}

}  // namespace ddp
