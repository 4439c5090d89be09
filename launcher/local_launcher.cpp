#include "launcher/local_launcher.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "runtime/env/cluster_env.h"
#include "runtime/exit_codes.h"
#include "runtime/log/logging.h"

namespace ddp::launcher {
namespace {

volatile sig_atomic_t receivedSignal = 0;

void onTerminationSignal(int signal) { receivedSignal = signal; }

void installSignalHandlers() {
  struct sigaction action {};
  action.sa_handler = onTerminationSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: waitpid must return EINTR so we can forward
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

struct Worker {
  int localRank = 0;
  int globalRank = 0;
  pid_t pid = -1;
  bool running = false;
};

pid_t startWorker(const WorkerSpec& spec, int localRank) {
  auto env = env::currentEnvironment();
  for (auto& [key, value] : workerEnvironment(spec, localRank)) env[key] = value;
  std::vector<std::string> envStrings;
  for (auto& [key, value] : env) envStrings.push_back(key + "=" + value);
  std::vector<char*> argv, envp;
  for (auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (auto& e : envStrings) envp.push_back(e.data());
  envp.push_back(nullptr);

  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(kExitTransient);  // the launcher died before prctl
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    execvpe(argv[0], argv.data(), envp.data());
    std::fprintf(stderr, "ddprun: cannot execute '%s': %s\n", argv[0], std::strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);  // also from the parent, so the group exists before we signal it
  return pid;
}

void signalAll(std::vector<Worker>& workers, int signal) {
  for (auto& w : workers) {
    if (w.running) kill(-w.pid, signal);
  }
}

// SIGTERM to every running worker, SIGKILL to those still there after the grace period.
void tearDown(std::vector<Worker>& workers, std::chrono::milliseconds grace, int firstSignal) {
  signalAll(workers, firstSignal);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  auto anyRunning = [&] {
    for (auto& w : workers) {
      if (w.running) return true;
    }
    return false;
  };
  while (anyRunning()) {
    for (auto& w : workers) {
      if (w.running && waitpid(w.pid, nullptr, WNOHANG) == w.pid) w.running = false;
    }
    if (!anyRunning()) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      for (auto& w : workers) {
        if (w.running) {
          log::warn("launcher", "rank {} (pid {}) still running after the {} ms grace period: "
                    "SIGKILL", w.globalRank, w.pid, grace.count());
          kill(-w.pid, SIGKILL);
          waitpid(w.pid, nullptr, 0);
          w.running = false;
        }
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

std::map<std::string, std::string> workerEnvironment(const WorkerSpec& spec, int localRank) {
  const int worldSize = spec.nprocPerNode * spec.nnodes;
  std::map<std::string, std::string> env{
      {"RANK", std::to_string(spec.nodeRank * spec.nprocPerNode + localRank)},
      {"LOCAL_RANK", std::to_string(localRank)},
      {"WORLD_SIZE", std::to_string(worldSize)},
      {"LOCAL_WORLD_SIZE", std::to_string(spec.nprocPerNode)},
      {"GROUP_RANK", std::to_string(spec.nodeRank)},
      {"MASTER_ADDR", spec.masterAddr},
      {"MASTER_PORT", std::to_string(spec.masterPort)},
      {"TORCHELASTIC_RESTART_COUNT", std::to_string(spec.restartCount)},
  };
  if (spec.ompNumThreads > 0) env["OMP_NUM_THREADS"] = std::to_string(spec.ompNumThreads);
  return env;
}

RunResult runWorkerGroup(const WorkerSpec& spec) {
  installSignalHandlers();
  std::vector<Worker> workers;
  for (int local = 0; local < spec.nprocPerNode; ++local) {
    Worker w;
    w.localRank = local;
    w.globalRank = spec.nodeRank * spec.nprocPerNode + local;
    w.pid = startWorker(spec, local);
    w.running = true;
    log::info("launcher", "started rank={} local_rank={} pid={}", w.globalRank, local, w.pid);
    workers.push_back(w);
  }
  RunResult result;
  int remaining = static_cast<int>(workers.size());
  while (remaining > 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR && receivedSignal) {
        result.receivedSignal = receivedSignal;
        log::warn("launcher", "received {}; forwarding to the workers",
                  receivedSignal == SIGTERM ? "SIGTERM" : "SIGINT");
        tearDown(workers, spec.gracePeriod, receivedSignal);
        result.exitCode = receivedSignal == SIGTERM ? kExitSigterm : kExitSigint;
        return result;
      }
      if (errno == EINTR) continue;
      break;  // ECHILD: nothing left
    }
    for (auto& w : workers) {
      if (w.pid != pid || !w.running) continue;
      w.running = false;
      --remaining;
      const bool failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
      if (!failed) {
        log::info("launcher", "rank={} exited code=0", w.globalRank);
        break;
      }
      result.failedRank = w.globalRank;
      if (WIFSIGNALED(status)) {
        result.failedSignal = WTERMSIG(status);
        result.exitCode = 128 + result.failedSignal;
        log::error("launcher", "rank={} pid={} killed by signal {} ({}); tearing down the group",
                   w.globalRank, pid, result.failedSignal, strsignal(result.failedSignal));
      } else {
        result.failedExitCode = WEXITSTATUS(status);
        result.exitCode = result.failedExitCode;
        log::error("launcher", "rank={} pid={} exited with code {}; tearing down the group",
                   w.globalRank, pid, result.failedExitCode);
      }
      tearDown(workers, spec.gracePeriod, SIGTERM);
      return result;
    }
  }
  return result;
}

}  // namespace ddp::launcher
