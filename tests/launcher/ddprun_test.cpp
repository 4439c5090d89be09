// ddprun as a user runs it: real worker processes (sh scripts and ddptrain), real signals,
// the process table checked for orphans.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/support/subprocess.h"

namespace ddp::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Args = std::vector<std::string>;
using Env = std::map<std::string, std::string>;
constexpr auto npos = std::string::npos;

ProcessResult runDdprun(Args args, Env env = {}, std::chrono::milliseconds timeout = 60s) {
  args.insert(args.begin(), DDPRUN_BINARY);
  ChildProcess process(args, env);
  return process.wait(timeout);
}

bool processAlive(pid_t pid) {
  // A zombie is dead for our purposes: only its parent's wait() is missing.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const auto close = line.rfind(')');
  return close != std::string::npos && line.size() > close + 2 && line[close + 2] != 'Z';
}

// Every live process whose parent is `parent` (the process table, /proc/<pid>/stat), but
// the launcher's guardian (launcher/group_guardian.h): the workers, for a launcher.
std::vector<pid_t> childrenOf(pid_t parent) {
  std::vector<pid_t> children;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const auto close = line.rfind(')');
    if (line.compare(line.find('(') + 1, close - line.find('(') - 1, "ddprun-guardian") == 0) {
      continue;
    }
    std::istringstream rest(line.substr(close + 2));
    char state;
    pid_t ppid;
    rest >> state >> ppid;
    if (ppid == parent && state != 'Z') children.push_back(std::stoi(name));
  }
  return children;
}

// The launcher's workers once `count` of them are up (5 s at most).
std::vector<pid_t> waitForChildren(pid_t launcher, std::size_t count) {
  std::vector<pid_t> children;
  for (int i = 0; i < 200 && children.size() < count; ++i) {
    std::this_thread::sleep_for(25ms);
    children = childrenOf(launcher);
  }
  return children;
}

// The pids a worker script printed as "<tag>=<pid>".
std::vector<pid_t> printedPids(const std::string& output, const std::string& tag) {
  std::vector<pid_t> pids;
  const std::regex pattern(tag + "=(\\d+)");
  for (auto it = std::sregex_iterator(output.begin(), output.end(), pattern);
       it != std::sregex_iterator(); ++it) {
    pids.push_back(std::stoi((*it)[1]));
  }
  return pids;
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool waitFor(const std::function<bool()>& condition, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// The pid a worker script wrote to `path` as "<pid>\n", once it is complete (10 s at most).
std::optional<pid_t> waitForPidFile(const fs::path& path) {
  std::optional<pid_t> pid;
  waitFor(
      [&] {
        const auto text = fs::exists(path) ? readFile(path) : "";
        if (!text.empty() && text.back() == '\n') pid = std::stoi(text);
        return pid.has_value();
      },
      10s);
  return pid;
}

// Whether `pid` is gone within `timeout`; a survivor is killed, so that no test leaves one.
bool goneWithin(pid_t pid, std::chrono::seconds timeout) {
  if (waitFor([&] { return !processAlive(pid); }, timeout)) return true;
  kill(pid, SIGKILL);
  return false;
}

int count(const std::string& text, const std::string& part) {
  int n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// torchrun's run directory under a --log-dir: the one "<run id>_<random>" in it.
fs::path runLogDirIn(const fs::path& logDir) {
  std::vector<fs::path> runs;
  if (fs::is_directory(logDir)) {
    for (const auto& entry : fs::directory_iterator(logDir)) runs.push_back(entry.path());
  }
  EXPECT_EQ(runs.size(), 1u) << logDir;
  if (runs.empty()) return logDir / "no-run-directory";
  EXPECT_EQ(runs[0].filename().string().rfind("none_", 0), 0u) << runs[0];
  return runs[0];
}

class TempDir {
 public:
  TempDir() {
    // A parameterized test's name has a '/' ("Test/Param"): flattened, so that the
    // destructor removes the whole directory, not only its last component.
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name.begin(), name.end(), '/', '_');
    path_ = fs::temp_directory_path() / ("ddprun_test_" + std::to_string(getpid()) + "_" + name);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// --- spawn and environment ---------------------------------------------------------------

class SpawnTest : public ::testing::TestWithParam<int> {};

TEST_P(SpawnTest, EachWorkerGetsTorchrunEnvironment) {
  const int n = GetParam();
  auto result = runDdprun({"--nproc-per-node", std::to_string(n), "--master-port", "29999",
                           "--max-restarts", "3", "--", "/bin/sh", "-c",
                           "echo \"rank=$RANK local=$LOCAL_RANK world=$WORLD_SIZE "
                           "lws=$LOCAL_WORLD_SIZE group=$GROUP_RANK gws=$GROUP_WORLD_SIZE "
                           "master=$MASTER_ADDR:$MASTER_PORT restarts=$TORCHELASTIC_RESTART_COUNT "
                           "max=$TORCHELASTIC_MAX_RESTARTS\""});
  SCOPED_TRACE(result.output);
  ASSERT_EQ(result.exitCode, 0);
  for (int rank = 0; rank < n; ++rank) {
    const auto line = "[rank" + std::to_string(rank) + "]: rank=" + std::to_string(rank) +
                      " local=" + std::to_string(rank) + " world=" + std::to_string(n) +
                      " lws=" + std::to_string(n) +
                      " group=0 gws=1 master=127.0.0.1:29999 restarts=0 max=3";
    EXPECT_EQ(count(result.output, line), 1) << "missing or repeated: " << line;
  }
}

INSTANTIATE_TEST_SUITE_P(Workers, SpawnTest, ::testing::Values(1, 2, 3, 4));

TEST(LauncherTest, NodeRankOffsetsGlobalRanks) {
  auto result = runDdprun({"--nproc-per-node", "2", "--nnodes", "3", "--node-rank", "2",
                           "--master-addr", "127.0.0.1", "--", "/bin/sh", "-c",
                           "echo \"rank=$RANK local=$LOCAL_RANK world=$WORLD_SIZE\""});
  SCOPED_TRACE(result.output);
  ASSERT_EQ(result.exitCode, 0);
  EXPECT_NE(result.output.find("rank=4 local=0 world=6"), std::string::npos);
  EXPECT_NE(result.output.find("rank=5 local=1 world=6"), std::string::npos);
}

TEST(LauncherTest, TakesTheNodeFromThePyTorchJobEnvironment) {
  auto result = runDdprun({"/bin/sh", "-c", "echo \"rank=$RANK world=$WORLD_SIZE\""},
                          {{"MASTER_ADDR", "127.0.0.1"},
                           {"MASTER_PORT", "23456"},
                           {"WORLD_SIZE", "4"},
                           {"RANK", "1"},
                           {"PET_NODE_RANK", "1"},
                           {"PET_NNODES", "2"},
                           {"PET_NPROC_PER_NODE", "2"}});
  SCOPED_TRACE(result.output);
  ASSERT_EQ(result.exitCode, 0);
  EXPECT_NE(result.output.find("[rank2]: rank=2 world=4"), std::string::npos);
  EXPECT_NE(result.output.find("[rank3]: rank=3 world=4"), std::string::npos);
}

// --rdzv-backend c10d: two nodes meet at an endpoint on loopback with no --node-rank; the
// node whose address it is hosts the store (the first to bind, here where both are on the
// same machine); each round gives ranks, world size and the master.
Args c10dNode(const std::string& endpoint, int nproc, const std::string& workerScript,
              const std::string& extraConf = "") {
  return {"--rdzv-backend",
          "c10d",
          "--rdzv-endpoint",
          endpoint,
          "--rdzv-id",
          "e2e",
          "--nnodes",
          "2",
          "--nproc-per-node",
          std::to_string(nproc),
          "--rdzv-conf",
          "last_call_timeout=1,join_timeout=30" + extraConf,
          "--grace-period",
          "2",
          "--",
          "/bin/sh",
          "-c",
          workerScript};
}

TEST(C10dLauncherTest, TwoNodesMeetAtTheEndpointAndGetTheirRanksFromTheRound) {
  const std::string endpoint = "127.0.0.1:" + std::to_string(findFreePort());
  const std::string script =
      "echo \"rank=$RANK world=$WORLD_SIZE group=$GROUP_RANK gws=$GROUP_WORLD_SIZE "
      "master=$MASTER_ADDR:$MASTER_PORT id=$TORCHELASTIC_RUN_ID\"";
  auto argsOf = [&](int nproc) {
    auto args = c10dNode(endpoint, nproc, script);
    args.insert(args.begin(), DDPRUN_BINARY);
    return args;
  };
  ChildProcess first(argsOf(1), {});
  ChildProcess second(argsOf(2), {});
  const auto a = first.wait(60s);
  const auto b = second.wait(60s);
  SCOPED_TRACE(a.output + "\n----\n" + b.output);
  ASSERT_EQ(a.exitCode, 0);
  ASSERT_EQ(b.exitCode, 0);
  const std::string both = a.output + b.output;
  // Three workers in all (1 + 2): every global rank once, one world size, one master.
  std::regex line(R"(rank=(\d) world=3 group=(\d) gws=2 master=127\.0\.0\.1:(\d+) id=e2e)");
  std::set<std::string> ranks, masters;
  for (auto it = std::sregex_iterator(both.begin(), both.end(), line); it != std::sregex_iterator();
       ++it) {
    ranks.insert((*it)[1]);
    masters.insert((*it)[3]);
  }
  EXPECT_EQ(ranks, (std::set<std::string>{"0", "1", "2"}));
  EXPECT_EQ(masters.size(), 1u);
}

TEST(C10dLauncherTest, TheHostsDeathEndsTheJobWithAClearError) {
  const std::string endpoint = "127.0.0.1:" + std::to_string(findFreePort());
  // Which node hosts is fixed (is_host): both would otherwise try, the first bind winning.
  auto hostArgs = c10dNode(endpoint, 1, "sleep 60", ",is_host=true");
  auto otherArgs = c10dNode(endpoint, 1, "sleep 60", ",is_host=false");
  hostArgs.insert(hostArgs.begin(), DDPRUN_BINARY);
  otherArgs.insert(otherArgs.begin(), DDPRUN_BINARY);
  auto host = std::make_unique<ChildProcess>(hostArgs, Env{});
  ChildProcess other(otherArgs, {});
  ASSERT_TRUE(waitFor([&] { return !childrenOf(other.pid()).empty(); }, 30s))
      << "the other node never started its worker";
  host.reset();  // SIGKILL: the store goes with it
  const auto result = other.wait(60s);
  EXPECT_EQ(result.exitCode, 200) << result.output;
  EXPECT_NE(result.output.find("the rendezvous store at " + endpoint + " stopped answering"),
            std::string::npos)
      << result.output;
}

// SIGTERM (a deleted pod) while the node waits for its round, or for the store's host to
// come up, was not read until the join timeout (600 s by default).
TEST(C10dLauncherTest, SigtermWhileWaitingForTheRoundOrTheStoreExits143Promptly) {
  for (const std::string role : {"host", "client"}) {
    SCOPED_TRACE(role);
    const std::string endpoint = "127.0.0.1:" + std::to_string(findFreePort());
    auto args = c10dNode(endpoint, 1, "true", role == "host" ? ",is_host=true" : ",is_host=false");
    args.insert(args.begin(), DDPRUN_BINARY);
    ChildProcess node(args, {});
    std::this_thread::sleep_for(1500ms);  // waiting: for a second node, or for the host
    const auto start = std::chrono::steady_clock::now();
    kill(node.pid(), SIGTERM);
    const auto result = node.wait(60s);
    EXPECT_EQ(result.exitCode, 143) << result.output;
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s) << result.output;
    EXPECT_NE(result.output.find("interrupted by signal 15"), std::string::npos) << result.output;
  }
}

TEST(LauncherTest, SetsOmpNumThreadsOnlyWhenUnset) {
  auto withValue =
      runDdprun({"--nproc-per-node", "2", "--", "/bin/sh", "-c", "echo omp=$OMP_NUM_THREADS"},
                {{"OMP_NUM_THREADS", "7"}});
  EXPECT_EQ(count(withValue.output, "omp=7"), 2) << withValue.output;
  EXPECT_EQ(withValue.output.find("OMP_NUM_THREADS is unset"), std::string::npos);
}

// --- output --------------------------------------------------------------------------------

TEST(OutputTest, LinesArePrefixedAndStdoutAndStderrKeptApart) {
  TempDir dir;
  ChildProcess shell({"/bin/sh", "-c",
                      std::string("exec ") + DDPRUN_BINARY +
                          " --nproc-per-node 2 -- /bin/sh -c "
                          "'echo out-$RANK; echo err-$RANK >&2; printf tail-$RANK' >" +
                          (dir / "out") + " 2>" + (dir / "err")},
                     {});
  ASSERT_EQ(shell.wait(30s).exitCode, 0);
  const auto out = readFile(dir / "out"), err = readFile(dir / "err");
  for (const std::string rank : {"0", "1"}) {
    EXPECT_NE(out.find("[rank" + rank + "]: out-" + rank + "\n"), std::string::npos) << out;
    EXPECT_NE(out.find("[rank" + rank + "]: tail-" + rank + "\n"), std::string::npos) << out;
    EXPECT_NE(err.find("[rank" + rank + "]: err-" + rank + "\n"), std::string::npos) << err;
  }
  EXPECT_EQ(out.find("err-"), std::string::npos) << out;
  EXPECT_EQ(err.find("out-"), std::string::npos) << err;
}

TEST(OutputTest, LinesOfConcurrentWorkersNeverInterleave) {
  // Four workers each write 3000 lines of 200 characters as fast as they can.
  auto result = runDdprun({"--nproc-per-node", "4", "--", "/bin/sh", "-c",
                           "line=$(printf \"%0200d\" 0 | tr 0 $RANK); i=0; "
                           "while [ $i -lt 3000 ]; do echo $line; i=$((i+1)); done"});
  ASSERT_EQ(result.exitCode, 0);
  const std::regex wholeLine(R"(\[rank([0-3])\]: ([0-3])\2{199})");
  std::istringstream lines(result.output);
  std::string line;
  std::map<std::string, int> perRank;
  while (std::getline(lines, line)) {
    if (line.rfind("[rank", 0) != 0) continue;  // the launcher's own log lines
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, wholeLine)) << "torn line: " << line.substr(0, 80);
    EXPECT_EQ(m[1], m[2]);
    ++perRank[m[1]];
  }
  for (const std::string rank : {"0", "1", "2", "3"}) EXPECT_EQ(perRank[rank], 3000) << rank;
}

TEST(OutputTest, LogDirGetsPerRankFilesAndRedirectsKeepThemOffTheConsole) {
  TempDir dir;
  auto result = runDdprun({"--nproc-per-node", "2", "--log-dir", dir / "logs", "--redirects", "1",
                           "--", "/bin/sh", "-c", "echo quiet-$RANK; echo loud-$RANK >&2"});
  ASSERT_EQ(result.exitCode, 0) << result.output;
  EXPECT_EQ(result.output.find("quiet-"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("[rank1]: loud-1"), std::string::npos) << result.output;
  const auto run = runLogDirIn(dir / "logs");
  EXPECT_EQ(readFile(run / "attempt_0/1/stdout.log"), "quiet-1\n");
  EXPECT_EQ(readFile(run / "attempt_0/0/stderr.log"), "loud-0\n");
}

TEST(OutputTest, AClosedConsoleDoesNotStopTheTraining) {
  TempDir dir;
  // `ddprun ... | head -n 1`: the console pipe closes after the first line.
  ChildProcess shell({"/bin/sh", "-c",
                      "(" + std::string(DDPRUN_BINARY) +
                          " --nproc-per-node 2 -- /bin/sh -c "
                          "'i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done; "
                          "touch " +
                          (dir / "done-") + "$RANK'; echo $? >" + (dir / "rc") + ") | head -n 1"},
                     {});
  ASSERT_EQ(shell.wait(30s).exitCode, 0);
  EXPECT_EQ(readFile(dir / "rc"), "0\n");
  EXPECT_TRUE(fs::exists(dir / "done-0"));
  EXPECT_TRUE(fs::exists(dir / "done-1"));
}

// --- live output and torchrun's output flags ---------------------------------------------
// Note [Live output] in launcher/output_router.h.

// What ddprun wrote to its console (stdout and stderr together), chunk by chunk, each with
// the time it arrived; the run ends at the console's end of file (ddprun has exited).
struct StreamedRun {
  struct Chunk {
    std::chrono::system_clock::time_point at;
    std::string bytes;
  };
  std::vector<Chunk> chunks;
  int exitCode = -1;
  std::chrono::system_clock::time_point endedAt;

  std::string all() const {
    std::string text;
    for (const auto& chunk : chunks) text += chunk.bytes;
    return text;
  }
  // When the console first held `part`; nullopt if it never did.
  std::optional<std::chrono::system_clock::time_point> firstSeen(const std::string& part) const {
    std::string text;
    for (const auto& chunk : chunks) {
      text += chunk.bytes;
      if (text.find(part) != std::string::npos) return chunk.at;
    }
    return std::nullopt;
  }
};

// Runs ddprun with its console on a pipe, or on a terminal (a pty 120 columns wide).
StreamedRun runStreamed(Args args, bool onTerminal, std::chrono::seconds timeout) {
  args.insert(args.begin(), DDPRUN_BINARY);
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  int console = -1;
  pid_t pid = -1;
  if (onTerminal) {
    winsize size{};
    size.ws_col = 120;
    size.ws_row = 40;
    pid = forkpty(&console, nullptr, nullptr, &size);
  } else {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return {};
    pid = fork();
    if (pid == 0) {
      dup2(fds[1], STDOUT_FILENO);
      dup2(fds[1], STDERR_FILENO);
    } else {
      close(fds[1]);
      console = fds[0];
    }
  }
  if (pid == 0) {
    setenv("GLOO_SOCKET_IFNAME", "lo", 1);
    execv(argv[0], argv.data());
    _exit(127);
  }
  StreamedRun run;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buffer[65536];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd ready{console, POLLIN, 0};
    if (poll(&ready, 1, 100) <= 0) continue;
    const ssize_t n = read(console, buffer, sizeof(buffer));
    if (n > 0) {
      run.chunks.push_back({std::chrono::system_clock::now(), std::string(buffer, n)});
    } else if (n == 0 || errno != EINTR) {
      break;  // end of file (a pty: EIO once the last writer has closed it)
    }
  }
  run.endedAt = std::chrono::system_clock::now();
  if (std::chrono::steady_clock::now() >= deadline) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  close(console);
  run.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return run;
}

Args progressBarRun(const std::string& barStream, int steps, double lingerSeconds) {
  return {"--standalone",
          "--nproc-per-node",
          "2",
          "--",
          DDPRUN_PYTHON,
          PROGRESS_BAR_WORKER,
          std::to_string(steps),
          "0.1",
          std::to_string(lingerSeconds),
          barStream};
}

double millisecondsBetween(std::chrono::system_clock::time_point from,
                           std::chrono::system_clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// How late each bar state "step I/N t=<time written>" reached the console (ms).
std::vector<double> barLatencies(const StreamedRun& run) {
  const std::regex state(R"(step \d+/\d+ t=(\d+\.\d+))");
  std::vector<double> latencies;
  for (const auto& chunk : run.chunks) {
    for (auto it = std::sregex_iterator(chunk.bytes.begin(), chunk.bytes.end(), state);
         it != std::sregex_iterator(); ++it) {
      const auto written = std::chrono::system_clock::time_point(
          std::chrono::duration_cast<std::chrono::system_clock::duration>(
              std::chrono::duration<double>(std::stod((*it)[1]))));
      latencies.push_back(millisecondsBetween(written, chunk.at));
    }
  }
  std::sort(latencies.begin(), latencies.end());
  return latencies;
}

void reportLatencies(const std::string& what, const std::vector<double>& latencies) {
  if (latencies.empty()) return;
  const double median = latencies[latencies.size() / 2];
  std::cout << what << ": " << latencies.size() << " bar states, latency median " << median
            << " ms, max " << latencies.back() << " ms" << std::endl;
  ::testing::Test::RecordProperty(what + "_median_ms", std::to_string(median));
  ::testing::Test::RecordProperty(what + "_max_ms", std::to_string(latencies.back()));
}

// The issue's repro: a Python DDP worker's bar (print(end="") without flush, on a pipe)
// showed nothing until the worker exited. Now its first state arrives after ~100 ms, a
// '\r' state at most every 10 s after it (not one line per update), the final one at '\n'.
TEST(LiveOutputTest, APythonWorkersProgressBarArrivesWhileItRuns) {
  const auto run = runStreamed(progressBarRun("stdout", 20, 4), /*onTerminal=*/false, 120s);
  const auto output = run.all();
  SCOPED_TRACE(output);
  ASSERT_EQ(run.exitCode, 0);
  const auto barAt = run.firstSeen("[rank0]:  step ");
  ASSERT_TRUE(barAt.has_value());
  // The worker lingers 4 s after its bar: the bar came while it ran, not at its exit.
  EXPECT_GT(millisecondsBetween(*barAt, run.endedAt), 3000);
  int barLines = 0;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) barLines += line.find(" step ") != npos;
  EXPECT_GE(barLines, 2);  // a state while it ran, and the final one
  EXPECT_LE(barLines, 3);  // not one per update (20)
  EXPECT_EQ(count(output, "[rank0]:  step 20/20"), 1);
  EXPECT_EQ(count(output, "[rank0]: done world_size=2 sum=1048576"), 1);  // 2^20
  EXPECT_EQ(count(output, "[rank1]: done world_size=2"), 1);
  EXPECT_EQ(output.find("[rank0]: [rank0]"), npos);  // a line naming its rank: no 2nd prefix
  reportLatencies("pipe", barLatencies(run));
}

// On a terminal, rank 0's bar is one line redrawn in place ("\r[rank0]: ..." and a clear
// to the end of the line), at most every ~100 ms, and its '\n' leaves the final state.
TEST(LiveOutputTest, OnATerminalRankZerosBarIsRedrawnInPlace) {
  const auto run = runStreamed(progressBarRun("stderr", 30, 1), /*onTerminal=*/true, 120s);
  const auto output = run.all();
  SCOPED_TRACE(output);
  ASSERT_EQ(run.exitCode, 0);
  EXPECT_GE(count(output, "\r[rank0]:  step "), 10);  // redrawn, one per ~100 ms
  EXPECT_NE(output.find("\x1b[K"), npos);
  int barLines = 0;  // lines as the terminal ends them: every redraw is on one
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) barLines += line.find(" step ") != npos;
  EXPECT_EQ(barLines, 1);
  EXPECT_NE(output.find("\r[rank0]:  step 30/30"), npos);
  EXPECT_EQ(output.find("[rank0]: [rank0]"), npos);
  const auto latencies = barLatencies(run);
  reportLatencies("terminal", latencies);
  ASSERT_FALSE(latencies.empty());
  // ~100 ms by design; the bound leaves room for a loaded 2-core machine.
  EXPECT_LT(latencies[latencies.size() / 2], 400);
}

TEST(OutputTest, TeeLocalRanksFilterAndTorchrunsLogLayout) {
  TempDir dir;
  const Args args{"--nproc-per-node",
                  "2",
                  "--log-dir",
                  dir / "logs",
                  "--tee",
                  "3",
                  "--local-ranks-filter",
                  "1",
                  "--",
                  "/bin/sh",
                  "-c",
                  "echo out-$LOCAL_RANK; echo err-$LOCAL_RANK >&2; "
                  "echo error_file=$TORCHELASTIC_ERROR_FILE unbuffered=$PYTHONUNBUFFERED"};
  auto result = runDdprun(args);
  SCOPED_TRACE(result.output);
  ASSERT_EQ(result.exitCode, 0);
  EXPECT_NE(result.output.find("[rank1]: out-1"), npos);
  EXPECT_NE(result.output.find("[rank1]: err-1"), npos);
  EXPECT_EQ(result.output.find("out-0"), npos);  // filtered off the console only
  EXPECT_EQ(result.output.find("err-0"), npos);
  const auto run = runLogDirIn(dir / "logs");
  EXPECT_NE(result.output.find("log_dir=" + run.string()), npos);  // in the start-up summary
  for (const std::string local : {"0", "1"}) {
    EXPECT_EQ(readFile(run / "attempt_0" / local / "stdout.log"),
              "out-" + local + "\nerror_file=" +
                  (run / "attempt_0" / local / "error.json").string() + " unbuffered=1\n");
    EXPECT_EQ(readFile(run / "attempt_0" / local / "stderr.log"), "err-" + local + "\n");
  }
  // The user's own PYTHONUNBUFFERED is left as it is.
  auto own = runDdprun({"--", "/bin/sh", "-c", "echo unbuffered=$PYTHONUNBUFFERED"},
                       {{"PYTHONUNBUFFERED", "0"}});
  EXPECT_NE(own.output.find("[rank0]: unbuffered=0"), npos) << own.output;
}

// torchrun writes --redirects/--tee without --log-dir to a new temporary directory.
TEST(OutputTest, RedirectsWithoutLogDirGoToANewTemporaryDirectory) {
  auto result = runDdprun({"--nproc-per-node", "2", "--redirects", "0:1", "--", "/bin/sh", "-c",
                           "echo out-$LOCAL_RANK"});
  SCOPED_TRACE(result.output);
  ASSERT_EQ(result.exitCode, 0);
  EXPECT_EQ(result.output.find("out-0"), npos);  // local rank 0's stdout: the file only
  EXPECT_NE(result.output.find("[rank1]: out-1"), npos);
  std::smatch logDir;
  ASSERT_TRUE(std::regex_search(result.output, logDir,
                                std::regex(R"(log_dir=(\S+/ddprun_\w+)/(none_\w+))")));
  EXPECT_EQ(readFile(fs::path(logDir[1].str()) / logDir[2].str() / "attempt_0/0/stdout.log"),
            "out-0\n");
  fs::remove_all(logDir[1].str());
}

// torchrun's layout end to end: a Python worker's @record writes its exception to
// TORCHELASTIC_ERROR_FILE, <run>/attempt_<k>/<local_rank>/error.json, as under torchrun.
TEST(OutputTest, APythonWorkersRecordWritesItsErrorJsonInTheLayout) {
  TempDir dir;
  auto result = runDdprun({"--log-dir", dir / "logs", "--", DDPRUN_PYTHON, "-c",
                           "from torch.distributed.elastic.multiprocessing.errors import record\n"
                           "@record\n"
                           "def main():\n"
                           "    raise RuntimeError('boom in the worker')\n"
                           "main()\n"});
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 1);
  const auto run = runLogDirIn(dir / "logs");
  const auto workerError = nlohmann::json::parse(readFile(run / "attempt_0/0/error.json"));
  EXPECT_NE(workerError.dump().find("boom in the worker"), npos);
  const auto report = nlohmann::json::parse(readFile(run / "error.json"));  // the launcher's
  EXPECT_EQ(report["exitCode"], 1);
}

// --- failures, teardown, restarts ----------------------------------------------------------

// Note [The error file]: rank 0 cannot write its checkpoint and fails; rank 1 then loses
// its peer and is reaped first. The report named rank 1's "Connection closed by peer"; it
// names rank 0's own error now, with rank 1's as a consequence, with or without --log-dir.
TEST(FailureTest, TheCulpritIsTheRankWhoseOwnErrorCameFirstNotTheFirstReaped) {
  const std::string errorJson =
      "printf '{\"message\": {\"message\": \"%s\", \"extraInfo\": {\"timestamp\": \"%s\", "
      "\"ddprun_time_ns\": \"%s\"}}}' \"$1\" $(date +%s) $(date +%s%N) > "
      "\"$TORCHELASTIC_ERROR_FILE\"";
  const std::string script =
      "report() { " + errorJson +
      "; }; "
      "if [ \"$RANK\" = 0 ]; then trap 'exit 200' TERM; "
      "report 'CheckpointError: No space left on device'; "
      "while true; do sleep 0.05; done; fi; "
      "sleep 0.5; report 'DistNetworkError: Connection closed by peer'; exit 200";
  for (const bool withLogDir : {false, true}) {
    SCOPED_TRACE(withLogDir ? "--log-dir" : "no --log-dir");
    TempDir dir;
    Args args{"--nproc-per-node", "2", "--error-file", dir / "error.json"};
    if (withLogDir) args.insert(args.end(), {"--log-dir", dir / "logs"});
    args.insert(args.end(), {"--", "/bin/sh", "-c", script});
    auto result = runDdprun(args);
    SCOPED_TRACE(result.output);
    EXPECT_EQ(result.exitCode, 200);
    EXPECT_NE(result.output.find("ddprun: rank 0 (local rank 0, pid"), std::string::npos);
    EXPECT_NE(result.output.find("ddprun: its error: CheckpointError: No space left on device"),
              std::string::npos);
    EXPECT_NE(result.output.find("ddprun: then (a consequence) rank 1: DistNetworkError: "
                                 "Connection closed by peer"),
              std::string::npos);
    const auto report = nlohmann::json::parse(readFile(dir / "error.json"));
    EXPECT_EQ(report["rank"], 0);
    EXPECT_EQ(report["error"], "CheckpointError: No space left on device");
    EXPECT_EQ(report["consequences"].size(), 1u);
  }
}

// A rank killed by a signal writes no error file; what the others then write does not make
// them the culprit.
TEST(FailureTest, ARankKilledFirstStaysTheCulpritWhateverTheOthersWrite) {
  TempDir dir;
  const std::string script =
      "if [ \"$RANK\" = 0 ]; then trap 'printf \"{\\\"message\\\": \\\"RuntimeError: "
      "stopped\\\"}\" "
      "> \"$TORCHELASTIC_ERROR_FILE\"; exit 200' TERM; while true; do sleep 0.05; done; fi; "
      "sleep 0.3; kill -KILL $$";
  auto result = runDdprun(
      {"--nproc-per-node", "2", "--error-file", dir / "error.json", "--", "/bin/sh", "-c", script});
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 137);
  const auto report = nlohmann::json::parse(readFile(dir / "error.json"));
  EXPECT_EQ(report["rank"], 1);
  EXPECT_EQ(report["signal"], 9);
  EXPECT_EQ(report["consequences"], nlohmann::json::array({"rank 0: RuntimeError: stopped"}));
}

TEST(FailureTest, FirstFailureTearsDownTheOthersAndIsReported) {
  TempDir dir;
  const auto start = std::chrono::steady_clock::now();
  // Rank 1 fails with 3; the others would sleep for a minute, and leave a child of their own.
  auto result = runDdprun({"--nproc-per-node", "3", "--grace-period", "5", "--error-file",
                           dir / "error.json", "--", "/bin/sh", "-c",
                           "if [ \"$RANK\" = 1 ]; then echo about to fail; sleep 1; "
                           "echo cannot go on >&2; exit 3; fi; "
                           "sleep 60 & echo grandchild-pid=$!; echo worker-pid=$$; wait"});
  const auto elapsed = std::chrono::steady_clock::now() - start;
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 3);
  EXPECT_LT(elapsed, 10s);
  EXPECT_NE(result.output.find("rank=1 pid="), std::string::npos);
  EXPECT_NE(result.output.find("failed: exit code 3; tearing down the group"), std::string::npos);
  EXPECT_NE(result.output.find("ddprun: rank 1 (local rank 1, pid"), std::string::npos);
  EXPECT_NE(result.output.find("    [stderr] cannot go on"), std::string::npos);
  auto pids = printedPids(result.output, "worker-pid");
  const auto grandchildren = printedPids(result.output, "grandchild-pid");
  EXPECT_EQ(pids.size(), 2u);
  EXPECT_EQ(grandchildren.size(), 2u);
  pids.insert(pids.end(), grandchildren.begin(), grandchildren.end());
  for (pid_t pid : pids) EXPECT_FALSE(processAlive(pid)) << "orphan pid " << pid;

  const auto report = nlohmann::json::parse(readFile(dir / "error.json"));
  EXPECT_EQ(report["rank"], 1);
  EXPECT_EQ(report["localRank"], 1);
  EXPECT_EQ(report["exitCode"], 3);
  EXPECT_TRUE(report["signal"].is_null());
  EXPECT_EQ(report["launcherExitCode"], 3);
  EXPECT_EQ(report["lastLines"], nlohmann::json::array({"about to fail", "[stderr] cannot go on"}));
}

// A helper a worker starts in the background, off the worker's pipes: it writes its pid to
// <dir>/helper and, on SIGTERM, "stopped" to <dir>/helper-stopped (`onTerm` "ignore": it
// ignores SIGTERM). The worker waits until the helper is up.
std::string helperScript(const TempDir& dir, const std::string& onTerm = "stop") {
  const std::string trap =
      onTerm == "ignore" ? "trap \"\" TERM"
                         : "trap \"echo stopped > " + (dir / "helper-stopped") + "; exit 0\" TERM";
  return "sh -c '" + trap + "; echo $$ > " + (dir / "helper") +
         "; while true; do sleep 0.05; done' </dev/null >/dev/null 2>&1 & "
         "while [ ! -s " +
         (dir / "helper") + " ]; do sleep 0.01; done; ";
}

// What a worker left in its process group gets SIGTERM, as a worker does (a helper may have
// something to flush), and is stopped: at the teardown after the worker failed (exit 3), and
// at the end of the attempt after it succeeded (exit 0).
class LeftBehindTest : public ::testing::TestWithParam<int> {};

TEST_P(LeftBehindTest, WhatAWorkerLeftInItsGroupGetsSigtermAndIsStopped) {
  const std::string exitCode = std::to_string(GetParam());
  TempDir dir;
  // Rank 0 starts a helper in its process group and exits; rank 1 sleeps on after a failure.
  auto result = runDdprun({"--nproc-per-node", "2", "--grace-period", "10", "--", "/bin/sh", "-c",
                           "if [ \"$RANK\" = 0 ]; then " + helperScript(dir) + "exit " + exitCode +
                               "; fi; [ " + exitCode + " = 0 ] || exec sleep 60"});
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, GetParam());
  const auto helper = waitForPidFile(dir / "helper");
  ASSERT_TRUE(helper.has_value());
  EXPECT_TRUE(goneWithin(*helper, 1s)) << "orphan pid " << *helper;
  EXPECT_EQ(readFile(dir / "helper-stopped"), "stopped\n");
}

INSTANTIATE_TEST_SUITE_P(WorkerExit, LeftBehindTest, ::testing::Values(3, 0));

TEST(FailureTest, ALeftBehindHelperIgnoringSigtermIsKilledAfterTheGracePeriod) {
  TempDir dir;
  const auto start = std::chrono::steady_clock::now();
  auto result = runDdprun({"--nproc-per-node", "1", "--grace-period", "1", "--", "/bin/sh", "-c",
                           helperScript(dir, "ignore") + "exit 0"});
  const auto elapsed = std::chrono::steady_clock::now() - start;
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 0);
  EXPECT_LT(elapsed, 5s);
  EXPECT_NE(result.output.find("rank=0: what it started in its process group outlived the 1000 "
                               "ms grace period; killing the group"),
            std::string::npos);
  const auto helper = waitForPidFile(dir / "helper");
  ASSERT_TRUE(helper.has_value());
  EXPECT_TRUE(goneWithin(*helper, 1s)) << "orphan pid " << *helper;
}

TEST(FailureTest, WorkerKilledBySignalGives128PlusSignal) {
  TempDir dir;
  auto result = runDdprun({"--nproc-per-node", "2", "--log-dir", dir / "logs", "--", "/bin/sh",
                           "-c", "if [ \"$RANK\" = 0 ]; then kill -9 $$; fi; exec sleep 60"});
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 128 + 9);
  EXPECT_NE(result.output.find("failed: signal 9 (Killed)"), std::string::npos);
  // The default: beside the attempts in the run's log directory.
  const auto report = nlohmann::json::parse(readFile(runLogDirIn(dir / "logs") / "error.json"));
  EXPECT_EQ(report["signal"], 9);
  EXPECT_TRUE(report["exitCode"].is_null());
}

TEST(FailureTest, GroupRestartsAfterAWorkerIsKilledAndCompletes) {
  const auto start = std::chrono::steady_clock::now();
  // Attempt 0: rank 1 is SIGKILLed mid-run while the others work; attempt 1 succeeds.
  auto result = runDdprun({"--nproc-per-node", "3", "--max-restarts", "2", "--grace-period", "10",
                           "--", "/bin/sh", "-c",
                           "echo attempt=$TORCHELASTIC_RESTART_COUNT; "
                           "if [ \"$TORCHELASTIC_RESTART_COUNT\" = 0 ]; then "
                           "  if [ \"$RANK\" = 1 ]; then sleep 0.5; kill -9 $$; fi; "
                           "  trap 'echo rank $RANK stopped; exit 143' TERM; "
                           "  while true; do sleep 0.05; done; fi; echo done-$RANK"});
  const auto elapsed = std::chrono::steady_clock::now() - start;
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 0);
  EXPECT_LT(elapsed, 8s);  // torn down at SIGTERM, not after the 10 s grace period
  EXPECT_NE(result.output.find("restarting the worker group: restart 1 of 2"), std::string::npos);
  EXPECT_EQ(count(result.output, "]: attempt=0\n"), 3);
  EXPECT_EQ(count(result.output, "]: attempt=1\n"), 3);
  EXPECT_EQ(count(result.output, "[rank0]: rank 0 stopped\n"), 1);
  EXPECT_EQ(count(result.output, "[rank2]: rank 2 stopped\n"), 1);
  for (const std::string rank : {"0", "1", "2"}) {
    EXPECT_NE(result.output.find("done-" + rank), std::string::npos);
  }
  EXPECT_EQ(result.output.find("failed first"), std::string::npos);  // no report on success
}

TEST(FailureTest, ExhaustedRestartsExitWithTheFailureAndItsReport) {
  TempDir dir;
  auto result = runDdprun({"--nproc-per-node", "2", "--max-restarts", "2", "--error-file",
                           dir / "error.json", "--", "/bin/sh", "-c",
                           "if [ \"$RANK\" = 0 ]; then echo giving up; exit 7; fi; exec sleep 60"});
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 7);
  EXPECT_EQ(count(result.output, "started ranks=0..1"), 3);
  EXPECT_NE(result.output.find("no restarts left (2 of --max-restarts=2 used)"), std::string::npos);
  const auto report = nlohmann::json::parse(readFile(dir / "error.json"));
  EXPECT_EQ(report["rank"], 0);
  EXPECT_EQ(report["exitCode"], 7);
  EXPECT_EQ(report["restartCount"], 2);
  EXPECT_EQ(report["maxRestarts"], 2);
  EXPECT_EQ(report["lastLines"], nlohmann::json::array({"giving up"}));
}

TEST(FailureTest, UsageErrorOfAWorkerIsNotRestarted) {
  auto result = runDdprun({"--nproc-per-node", "2", "--max-restarts", "3", "--", "/bin/sh", "-c",
                           "if [ \"$RANK\" = 1 ]; then exit 2; fi; exec sleep 60"});
  EXPECT_EQ(result.exitCode, 2) << result.output;
  EXPECT_EQ(count(result.output, "started ranks=0..1"), 1) << result.output;
  EXPECT_NE(result.output.find("not restarting"), std::string::npos) << result.output;
}

// Found missing before any worker starts (launcher/worker_program.h): one usage error.
TEST(FailureTest, MissingProgramIsAUsageErrorBeforeAnyWorkerStarts) {
  auto result = runDdprun({"--nproc-per-node", "2", "--", "/nonexistent/program"});
  EXPECT_EQ(result.exitCode, 2);
  EXPECT_NE(result.output.find("PROGRAM /nonexistent/program: expected an executable or a Python "
                               "script; found no executable file at /nonexistent/program."),
            std::string::npos)
      << result.output;
  EXPECT_EQ(result.output.find("started rank="), std::string::npos) << result.output;
}

// --- programs as torchrun runs them (Note [How ddprun runs PROGRAM]) ---------------------

// The venv's interpreter (the tests' DDPRUN_PYTHON) as the only python3 in PATH.
Env pathWithPython(const TempDir& dir) {
  fs::create_directories(dir.path() / "bin");
  fs::create_symlink(DDPRUN_PYTHON, dir.path() / "bin" / "python3");
  return {{"PATH", (dir.path() / "bin").string() + ":/usr/bin:/bin"}};
}

const char* const kPrintRank =
    "import os, sys\n"
    "print(f\"rank={os.environ['RANK']} world={os.environ['WORLD_SIZE']} "
    "role={os.environ['ROLE_NAME']} argv={sys.argv[1:]} name={__name__}\")\n";

TEST(ProgramTest, APythonScriptRunsWithThePythonInPathOnEveryWorker) {
  TempDir dir;
  std::ofstream(dir / "train.py") << kPrintRank;
  auto result =
      runDdprun({"--nproc-per-node", "2", "--role", "trainer", dir / "train.py", "--lr", "0.1"},
                pathWithPython(dir));
  SCOPED_TRACE(result.output);
  ASSERT_EQ(result.exitCode, 0);
  for (const char* rank : {"0", "1"}) {
    EXPECT_EQ(count(result.output, std::string("[rank") + rank + "]: rank=" + rank +
                                       " world=2 role=trainer argv=['--lr', '0.1'] name=__main__"),
              1);
  }
  EXPECT_NE(result.output.find("program_kind=python-script"), std::string::npos);
}

TEST(ProgramTest, PythonExecAndThePythonFlagChooseTheInterpreter) {
  TempDir dir;
  std::ofstream(dir / "train.py") << "import sys; print('exe=' + sys.executable)\n";
  const Env noPython{{"PATH", "/usr/bin:/bin"}, {"PYTHON_EXEC", DDPRUN_PYTHON}};
  auto fromEnv = runDdprun({dir / "train.py"}, noPython);
  EXPECT_EQ(fromEnv.exitCode, 0) << fromEnv.output;
  EXPECT_NE(fromEnv.output.find(std::string("exe=") + DDPRUN_PYTHON), std::string::npos)
      << fromEnv.output;
  auto missing = runDdprun({"--python", dir / "no-python", dir / "train.py"}, noPython);
  EXPECT_EQ(missing.exitCode, 2) << missing.output;
  EXPECT_NE(missing.output.find("--python=" + (dir / "no-python") +
                                ": expected a Python interpreter to run " + (dir / "train.py") +
                                "; found no executable file at " + (dir / "no-python")),
            std::string::npos)
      << missing.output;
  EXPECT_EQ(missing.output.find("started rank="), std::string::npos);
}

TEST(ProgramTest, AMissingScriptExits2NamingThePathTried) {
  TempDir dir;
  auto result = runDdprun({"--nproc-per-node", "2", dir / "trian.py"}, pathWithPython(dir));
  EXPECT_EQ(result.exitCode, 2) << result.output;
  EXPECT_NE(result.output.find("Python script " + (dir / "trian.py") +
                               ": expected a file; found nothing at " + (dir / "trian.py")),
            std::string::npos)
      << result.output;
  EXPECT_EQ(result.output.find("started rank="), std::string::npos);
}

TEST(ProgramTest, AModuleRunsWithMinusM) {
  TempDir dir;
  fs::create_directories(dir.path() / "pkg");
  std::ofstream(dir / "pkg/__init__.py") << "";
  std::ofstream(dir / "pkg/train.py") << kPrintRank;
  auto env = pathWithPython(dir);
  env["PYTHONPATH"] = dir.path().string();
  auto result = runDdprun({"--nproc-per-node", "2", "-m", "pkg.train", "x"}, env);
  SCOPED_TRACE(result.output);
  ASSERT_EQ(result.exitCode, 0);
  EXPECT_EQ(count(result.output, "[rank1]: rank=1 world=2 role=default argv=['x'] name=__main__"),
            1);
  auto missing = runDdprun({"--nproc-per-node", "2", "-m", "nopkg.train"}, env);
  EXPECT_EQ(missing.exitCode, 2) << missing.output;
  EXPECT_NE(missing.output.find("-m nopkg.train: expected a module " + (dir / "bin/python3") +
                                " can import; found no module named 'nopkg'"),
            std::string::npos)
      << missing.output;
  EXPECT_EQ(missing.output.find("started rank="), std::string::npos);
}

TEST(ProgramTest, RunPathRunsTheScriptAsMain) {
  TempDir dir;
  std::ofstream(dir / "train.py") << kPrintRank;
  auto result = runDdprun({"--run-path", dir / "train.py", "a"}, pathWithPython(dir));
  EXPECT_EQ(result.exitCode, 0) << result.output;
  EXPECT_EQ(count(result.output, "[rank0]: rank=0 world=1 role=default argv=['a'] name=__main__"),
            1)
      << result.output;
}

// torchrun's --no-python; and a native program runs directly without it (ddptrain does).
TEST(ProgramTest, NoPythonExecutesTheProgramAsItIs) {
  TempDir dir;
  std::ofstream(dir / "job.py") << "#!/bin/sh\necho \"sh rank=$RANK\"\n";
  fs::permissions(dir / "job.py", fs::perms::owner_all);
  auto result =
      runDdprun({"--no-python", "--nproc-per-node", "2", dir / "job.py"}, pathWithPython(dir));
  EXPECT_EQ(result.exitCode, 0) << result.output;
  EXPECT_EQ(count(result.output, "sh rank="), 2) << result.output;
  auto native = runDdprun({"--nproc-per-node", "2", "/bin/sh", "-c", "echo native=$RANK"});
  EXPECT_EQ(count(native.output, "native="), 2) << native.output;
  EXPECT_NE(native.output.find("program_kind=executable"), std::string::npos);
}

TEST(ProgramTest, DryRunShowsWhatTheWorkersExecute) {
  TempDir dir;
  std::ofstream(dir / "train.py") << "";
  auto result = runDdprun({"--dry-run", dir / "train.py", "--x"}, pathWithPython(dir));
  ASSERT_EQ(result.exitCode, 0) << result.output;
  const auto plan = nlohmann::json::parse(result.output);
  EXPECT_EQ(plan["program"],
            nlohmann::json::array({dir / "bin/python3", "-u", dir / "train.py", "--x"}));
  EXPECT_EQ(plan["programKind"], "python-script");
  EXPECT_EQ(plan["programReason"], "a .py file");
}

// --- torchrun's other flags --------------------------------------------------------------

TEST(TorchrunFlagTest, VirtualLocalRankGivesEachWorkerItsOwnDeviceAsDevice0) {
  auto result = runDdprun({"--virtual-local-rank", "--nproc-per-node", "2", "/bin/sh", "-c",
                           "echo local=$LOCAL_RANK cuda=$CUDA_VISIBLE_DEVICES"},
                          {{"CUDA_VISIBLE_DEVICES", "5,7"}});
  EXPECT_EQ(result.exitCode, 0) << result.output;
  EXPECT_EQ(count(result.output, "[rank0]: local=0 cuda=5"), 1) << result.output;
  EXPECT_EQ(count(result.output, "[rank1]: local=0 cuda=7"), 1) << result.output;
  auto tooFew = runDdprun({"--virtual-local-rank", "--nproc-per-node", "2", "true"},
                          {{"CUDA_VISIBLE_DEVICES", "5"}});
  EXPECT_EQ(tooFew.exitCode, 2) << tooFew.output;
  EXPECT_NE(tooFew.output.find("CUDA_VISIBLE_DEVICES=5: expected a device for each of the 2 "
                               "workers"),
            std::string::npos)
      << tooFew.output;
}

// SLURM sends SIGUSR1 before the time limit: forwarded, then ddprun exits 128 + 10.
TEST(TorchrunFlagTest, SignalsToHandleForwardsTheListedSignals) {
  ChildProcess launcher({DDPRUN_BINARY, "--signals-to-handle", "SIGUSR1,SIGTERM",
                         "--nproc-per-node", "2", "--", "/bin/sh", "-c",
                         "trap 'echo rank=$RANK got USR1; exit 0' USR1; echo up; "
                         "while :; do sleep 0.05; done"},
                        {});
  ASSERT_EQ(waitForChildren(launcher.pid(), 2).size(), 2u);
  std::this_thread::sleep_for(200ms);  // the traps are set once "up" is printed
  kill(launcher.pid(), SIGUSR1);
  auto result = launcher.wait(20s);
  EXPECT_EQ(result.exitCode, 128 + SIGUSR1) << result.output;
  EXPECT_EQ(count(result.output, "got USR1"), 2) << result.output;
  EXPECT_NE(result.output.find("received SIGUSR1; forwarding it"), std::string::npos);
}

TEST(TorchrunFlagTest, HelpSaysHowProgramsRunAndWhyFlagsAreIgnored) {
  auto result = runDdprun({"--help"});
  EXPECT_EQ(result.exitCode, 0);
  EXPECT_NE(result.output.find("How ddprun runs PROGRAM"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("torchrun compatibility"), std::string::npos);
  EXPECT_NE(result.output.find("--start-method METHOD"), std::string::npos);
  EXPECT_NE(result.output.find("IGNORED: every worker is a new process"), std::string::npos);
  auto table = runDdprun({"--flags-json"});
  ASSERT_EQ(table.exitCode, 0);
  EXPECT_GT(nlohmann::json::parse(table.output).size(), 30u);
  auto completion = runDdprun({"--print-completion", "bash"});
  EXPECT_EQ(completion.exitCode, 0);
  EXPECT_EQ(completion.output.rfind("complete -o default -W '--nnodes ", 0), 0u)
      << completion.output;
}

// --- signals to ddprun ---------------------------------------------------------------------

TEST(SignalTest, SigtermIsForwardedAndEverythingExits143WithNoOrphan) {
  ChildProcess launcher({DDPRUN_BINARY, "--nproc-per-node", "2", "--", "/bin/sh", "-c",
                         "trap 'echo rank=$RANK got TERM; exit 0' TERM; "
                         "while true; do sleep 0.05; done"},
                        {});
  const auto workers = waitForChildren(launcher.pid(), 2);
  ASSERT_EQ(workers.size(), 2u);
  std::this_thread::sleep_for(300ms);  // the traps are installed
  kill(launcher.pid(), SIGTERM);
  auto result = launcher.wait(20s);
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 143);
  EXPECT_NE(result.output.find("rank=0 got TERM"), std::string::npos);
  EXPECT_NE(result.output.find("rank=1 got TERM"), std::string::npos);
  for (pid_t pid : workers) EXPECT_FALSE(processAlive(pid)) << "orphan pid " << pid;
}

TEST(SignalTest, WorkerIgnoringSigtermIsKilledAfterGracePeriod) {
  const auto start = std::chrono::steady_clock::now();
  ChildProcess launcher(
      {DDPRUN_BINARY, "--nproc-per-node", "2", "--grace-period", "1", "--", "/bin/sh", "-c",
       "trap '' TERM; echo pid=$$; while true; do sleep 0.05; done"},
      {});
  std::this_thread::sleep_for(1000ms);
  kill(launcher.pid(), SIGTERM);
  auto result = launcher.wait(20s);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 143);
  EXPECT_EQ(count(result.output, "after the 1000 ms grace period: SIGKILL"), 2);
  EXPECT_LT(elapsed, 5s);
  for (pid_t pid : printedPids(result.output, "pid")) EXPECT_FALSE(processAlive(pid));
}

TEST(SignalTest, KilledLauncherTakesItsWorkersWithIt) {
  ChildProcess launcher({DDPRUN_BINARY, "--nproc-per-node", "3", "--", "/bin/sh", "-c",
                         "trap '' TERM; while true; do sleep 0.05; done"},
                        {});
  const auto workers = waitForChildren(launcher.pid(), 3);
  ASSERT_EQ(workers.size(), 3u);
  kill(launcher.pid(), SIGKILL);
  launcher.wait(10s);
  std::this_thread::sleep_for(300ms);
  for (pid_t pid : workers) EXPECT_FALSE(processAlive(pid)) << "orphan pid " << pid;
}

TEST(SignalTest, KilledLauncherTakesWhatItsWorkersStartedWithIt) {
  TempDir dir;
  // PR_SET_PDEATHSIG reaches the workers only; each leaves a grandchild that outlives it
  // unless its process group is killed.
  ChildProcess launcher({DDPRUN_BINARY, "--nproc-per-node", "2", "--", "/bin/sh", "-c",
                         "sleep 300 & echo $! > " + (dir / "grandchild-") + "$RANK; wait"},
                        {});
  std::vector<pid_t> grandchildren;
  for (const std::string rank : {"0", "1"}) {
    const auto pid = waitForPidFile(dir / ("grandchild-" + rank));
    ASSERT_TRUE(pid.has_value()) << "rank " << rank << " did not start its grandchild";
    ASSERT_TRUE(processAlive(*pid));
    grandchildren.push_back(*pid);
  }
  kill(launcher.pid(), SIGKILL);
  launcher.wait(10s);
  for (pid_t pid : grandchildren) EXPECT_TRUE(goneWithin(pid, 5s)) << "orphan pid " << pid;
}

TEST(SignalTest, CtrlCReachesEachWorkerOnceAndLeavesTheGuardianStanding) {
  TempDir dir;
  // setsid: ddprun leads a process group of its own, as a shell's foreground job does, and
  // the terminal's SIGINT goes to that whole group. The workers, in groups of their own,
  // hear it once, from ddprun; they ignore it (and stay), and so must the guardian.
  ChildProcess launcher(
      {"/usr/bin/setsid", DDPRUN_BINARY, "--nproc-per-node", "2", "--grace-period", "60", "--",
       "/bin/sh", "-c",
       "trap 'echo INT >> " + (dir / "int-") + "$RANK' INT; sleep 300 & echo $! > " +
           (dir / "grandchild-") + "$RANK; while true; do wait; done"},
      {});
  std::vector<pid_t> grandchildren;
  for (const std::string rank : {"0", "1"}) {
    const auto pid = waitForPidFile(dir / ("grandchild-" + rank));
    ASSERT_TRUE(pid.has_value()) << "rank " << rank << " did not start its grandchild";
    grandchildren.push_back(*pid);
  }
  ASSERT_EQ(getpgid(launcher.pid()), launcher.pid());
  kill(-launcher.pid(), SIGINT);
  for (const std::string rank : {"0", "1"}) {
    EXPECT_TRUE(waitFor([&] { return fs::exists(dir / ("int-" + rank)); }, 5s)) << rank;
  }
  std::this_thread::sleep_for(200ms);  // a second delivery would have arrived by now
  for (const std::string rank : {"0", "1"}) EXPECT_EQ(readFile(dir / ("int-" + rank)), "INT\n");
  // The guardian outlived the Ctrl-C: kill -9 of the launcher still takes the grandchildren.
  kill(launcher.pid(), SIGKILL);
  launcher.wait(10s);
  for (pid_t pid : grandchildren) EXPECT_TRUE(goneWithin(pid, 5s)) << "orphan pid " << pid;
}

// --- dry run, per environment source -------------------------------------------------------

struct DryRunCase {
  std::string name;
  Env env;
  Args flags;
  std::string source;
  int nnodes, nodeRank, nproc;
  std::string master;
};

void PrintTo(const DryRunCase& c, std::ostream* os) { *os << c.name; }

class DryRunTest : public ::testing::TestWithParam<DryRunCase> {};

TEST_P(DryRunTest, PrintsThePlanAndStartsNothing) {
  const auto& c = GetParam();
  TempDir dir;
  Args args = c.flags;
  args.insert(args.begin(), "--dry-run");
  // Would leave a file behind if it ran.
  for (const char* a : {"--", "/bin/sh", "-c"}) args.push_back(a);
  args.push_back("touch " + (dir / "ran"));
  auto result = runDdprun(args, c.env);
  ASSERT_EQ(result.exitCode, 0) << result.output;
  const auto plan = nlohmann::json::parse(result.output);
  EXPECT_EQ(plan["source"], c.source);
  EXPECT_EQ(plan["nnodes"], c.nnodes);
  EXPECT_EQ(plan["nodeRank"], c.nodeRank);
  EXPECT_EQ(plan["nprocPerNode"], c.nproc);
  EXPECT_EQ(plan["worldSize"], c.nnodes * c.nproc);
  EXPECT_EQ(
      plan["masterAddr"].get<std::string>() + ":" + std::to_string(plan["masterPort"].get<int>()),
      c.master);
  ASSERT_EQ(plan["workers"].size(), static_cast<size_t>(c.nproc));
  for (int local = 0; local < c.nproc; ++local) {
    const auto& w = plan["workers"][local];
    EXPECT_EQ(w["rank"], c.nodeRank * c.nproc + local);
    EXPECT_EQ(w["env"]["RANK"], std::to_string(c.nodeRank * c.nproc + local));
    EXPECT_EQ(w["env"]["LOCAL_RANK"], std::to_string(local));
    EXPECT_EQ(w["env"]["WORLD_SIZE"], std::to_string(c.nnodes * c.nproc));
  }
  EXPECT_EQ(plan["program"].back(), "touch " + (dir / "ran"));
  EXPECT_FALSE(fs::exists(dir / "ran"));
  // Nothing left in the temp directory once `dir` is gone.
  EXPECT_EQ(dir.path().parent_path(), fs::temp_directory_path());
}

INSTANTIATE_TEST_SUITE_P(
    Sources, DryRunTest,
    ::testing::Values(
        DryRunCase{"Default", {}, {}, "default", 1, 0, 1, "127.0.0.1:29500"},
        DryRunCase{"Flags",
                   {},
                   {"--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "3", "--master-addr",
                    "10.0.0.1", "--master-port", "1234"},
                   "flags",
                   2,
                   1,
                   3,
                   "10.0.0.1:1234"},
        DryRunCase{"PyTorchJob",
                   {{"MASTER_ADDR", "job-master-0"},
                    {"MASTER_PORT", "23456"},
                    {"WORLD_SIZE", "6"},
                    {"RANK", "1"},
                    {"PET_NODE_RANK", "1"},
                    {"PET_NNODES", "3"},
                    {"PET_NPROC_PER_NODE", "2"},
                    {"PET_MASTER_ADDR", "job-master-0"},
                    {"PET_MASTER_PORT", "23456"}},
                   {},
                   "pytorchjob",
                   3,
                   1,
                   2,
                   "job-master-0:23456"},
        DryRunCase{"PyTorchJobBeforeV17",
                   {{"MASTER_ADDR", "job-master-0"},
                    {"MASTER_PORT", "23456"},
                    {"WORLD_SIZE", "3"},
                    {"RANK", "2"}},
                   {},
                   "pytorchjob",
                   3,
                   2,
                   1,
                   "job-master-0:23456"},
        DryRunCase{"TrainerV2",
                   {{"PET_NNODES", "2"},
                    {"PET_NPROC_PER_NODE", "2"},
                    {"PET_NODE_RANK", "1"},
                    {"PET_MASTER_ADDR", "tj-node-0-0.tj"},
                    {"PET_MASTER_PORT", "29500"}},
                   {},
                   "trainer-v2",
                   2,
                   1,
                   2,
                   "tj-node-0-0.tj:29500"},
        DryRunCase{"OpenMpi",
                   {{"OMPI_COMM_WORLD_RANK", "2"},
                    {"OMPI_COMM_WORLD_SIZE", "4"},
                    {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                    {"OMPI_COMM_WORLD_LOCAL_SIZE", "1"},
                    {"MASTER_ADDR", "job-worker-0.job"}},
                   {},
                   "openmpi",
                   4,
                   2,
                   1,
                   "job-worker-0.job:29500"},
        DryRunCase{
            "Pmi",
            {{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}, {"MASTER_ADDR", "h0"}, {"MASTER_PORT", "5000"}},
            {"--nproc-per-node", "2"},
            "pmi",
            2,
            1,
            2,
            "h0:5000"}));

// --- usage errors --------------------------------------------------------------------------

struct UsageCase {
  Args args;
  Env env;
  std::string message;
  friend void PrintTo(const UsageCase& c, std::ostream* os) { *os << c.message; }
};

class UsageErrorTest : public ::testing::TestWithParam<UsageCase> {};

TEST_P(UsageErrorTest, ExitsWith2AndSaysWhy) {
  auto result = runDdprun(GetParam().args, GetParam().env);
  EXPECT_EQ(result.exitCode, 2) << result.output;
  EXPECT_NE(result.output.find(GetParam().message), std::string::npos) << result.output;
}

INSTANTIATE_TEST_SUITE_P(
    BadInput, UsageErrorTest,
    ::testing::Values(
        UsageCase{
            {"--nproc-per-node", "abc", "true"}, {}, "--nproc-per-node=abc: expected a number"},
        UsageCase{{"--nproc-per-node", "0", "true"}, {}, "--nproc-per-node=0: expected a number"},
        UsageCase{{"--nnodes", "2", "--node-rank", "2", "--master-addr", "h", "true"},
                  {},
                  "node rank 2 (from --node-rank) must be below the node count 2"},
        UsageCase{
            {"--nnodes", "1:4", "true"}, {}, "is an elastic range, and the static rendezvous"},
        UsageCase{
            {"--rdzv-backend", "c10d", "--rdzv-endpoint", "h", "--rdzv-conf", "timeout", "true"},
            {},
            "'timeout' without a key=value"},
        UsageCase{{"--rdzv-backend", "etcd-v2", "true"}, {}, "which needs an etcd server"},
        UsageCase{{"--nnodes", "2", "true"}, {}, "MASTER_ADDR (unset)"},
        UsageCase{{"--master-port", "70000", "true"},
                  {},
                  "--master-port=70000: expected a decimal integer in [1, 65535]"},
        UsageCase{{"--max-restarts", "-1", "true"}, {}, "--max-restarts=-1"},
        UsageCase{{"--backend", "mpi", "true"}, {}, "--backend=mpi: expected gloo, nccl or auto"},
        UsageCase{{"--redirects", "0:9", "true"}, {}, "--redirects=0:9: expected 0 (none)"},
        UsageCase{{"--local-ranks-filter", "first", "true"}, {}, "--local-ranks-filter=first"},
        UsageCase{{"--bogus", "true"}, {}, "bogus"},
        UsageCase{{"--numa-binding", "node", "true"},
                  {},
                  "--numa-binding=node: torchrun's --numa-binding is not supported by ddprun"},
        UsageCase{{"--print-completion", "fish"}, {}, "--print-completion=fish: expected bash"},
        UsageCase{{"--nproc-per-node", "2"}, {}, "no PROGRAM given"},
        UsageCase{{"true"},
                  {{"RANK", "3"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "m"}},
                  "RANK=3: expected a value below WORLD_SIZE=2"},
        // The launcher once passed these on and every worker failed on them instead.
        UsageCase{{"true"},
                  {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "m:29500"}},
                  "MASTER_ADDR=m:29500: expected a host without a port; found host:port"},
        UsageCase{{"--nproc-per-node", "2", "true"},
                  {{"MASTER_ADDR", "m 0"}},
                  "MASTER_ADDR=m 0: expected the host name or IP address of rank 0; found "
                  "whitespace"},
        UsageCase{{"true"},
                  {{"PET_MAX_RESTARTS", "-1"}},
                  "PET_MAX_RESTARTS=-1: expected a decimal integer in [0, 1000]; found a "
                  "negative number"},
        UsageCase{{"--log-level", "loud", "true"}, {}, "--log-level=loud: expected one of debug"},
        UsageCase{{"true"},
                  {{"DDPRUN_LOG_LEVEL", "loud"}},
                  "DDPRUN_LOG_LEVEL=loud: expected one of debug"},
        UsageCase{{"true"}, {{"RANK", "zero"}, {"WORLD_SIZE", "2"}}, "RANK=zero"},
        UsageCase{{"true"}, {{"LOCAL_RANK", "0"}}, "inside another launcher's worker"}));

// --- a --log-dir that cannot be written --------------------------------------------------
// A permanent error (exit 2) before any worker starts, never exit 200 and a restart loop.

void expectLogDirRefused(const ProcessResult& result, const TempDir& dir, const std::string& logDir,
                         const std::string& cause) {
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 2);
  // The type check (a file in the way) or the write check (read-only) answers first.
  EXPECT_NE(result.output.find("--log-dir=" + logDir + ": expected a directory"), std::string::npos)
      << cause;
  EXPECT_EQ(result.output.find("started ranks="), std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "ran"));
}

// cxxopts' std::regex recursed once per character: a 100 000-byte flag was a SIGSEGV.
TEST(BadFlagTest, AnOverlongFlagIsAUsageErrorNotACrash) {
  auto result = runDdprun({"--master-addr=" + std::string(100000, 'a'), "--", "/usr/bin/true"});
  EXPECT_EQ(result.termSignal, 0) << result.output;
  EXPECT_EQ(result.exitCode, 2) << result.output;
  EXPECT_NE(result.output.find("expected at most 8192 bytes, found 100014"), std::string::npos)
      << result.output.substr(0, 400);
}

TEST(LogDirTest, APathUnderARegularFileIsRefusedBeforeAnyWorkerStarts) {
  TempDir dir;
  std::ofstream(dir / "file") << "not a directory\n";
  const auto logDir = dir / "file/logs";
  auto result = runDdprun({"--log-dir", logDir, "--", "/usr/bin/touch", dir / "ran"});
  expectLogDirRefused(result, dir, logDir, "that it cannot create it: Not a directory");
}

// A read-only volume: a tmpfs mounted read-only, in a mount namespace of ddprun's own (a
// mode of 0555 would not stop root, who runs the tests in CI). `under` "" is the read-only
// directory itself, "logs" one to create in it.
class ReadOnlyLogDirTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReadOnlyLogDirTest, IsRefusedBeforeAnyWorkerStarts) {
  TempDir dir;
  fs::create_directories(dir / "ro");
  const auto logDir = GetParam().empty() ? dir / "ro" : dir / ("ro/" + GetParam());
  const std::string namespaceFlags = geteuid() == 0 ? "--mount" : "--mount --map-root-user";
  ChildProcess shell({"/bin/sh", "-c",
                      "unshare " + namespaceFlags + " sh -c 'mount -t tmpfs -o ro tmpfs " +
                          (dir / "ro") + " || exit 77; exec " + DDPRUN_BINARY + " --log-dir " +
                          logDir + " -- /usr/bin/touch " + (dir / "ran") + "'"},
                     {});
  const auto result = shell.wait(30s);
  if (result.exitCode == 77) GTEST_SKIP() << "no mount namespace here: " << result.output;
  expectLogDirRefused(result, dir, logDir,
                      GetParam().empty()
                          ? "that it cannot create a file in it: Read-only file system"
                          : "that it cannot create it: Read-only file system");
}

INSTANTIATE_TEST_SUITE_P(Under, ReadOnlyLogDirTest, ::testing::Values("", "logs"));

// --- with the real trainer ------------------------------------------------------------------

const std::string kFashion = "/usr/share/datasets/fashion-mnist";

Args ddptrainArgs(const fs::path& checkpoints) {
  return {DDPTRAIN_BINARY,
          "--model",
          "cnn",
          "--data",
          "idx",
          "--data-dir",
          kFashion,
          "--max-steps",
          "150",
          "--batch-size",
          "32",
          "--checkpoint-dir",
          checkpoints.string(),
          "--checkpoint-every",
          "10",
          "--log-every",
          "1000",
          "--seed",
          "3"};
}

// The issue's repro: a checkpoint of another model restarted 3 times (exit 200 each), and
// a diverging run would have too. Both are permanent now: one attempt, the worker's code.
TEST(DdptrainUnderDdprunTest, PermanentTrainingErrorsAreNotRestarted) {
  if (!fs::exists(kFashion)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TempDir dir;
  auto mlp = ddptrainArgs(dir.path());
  mlp[2] = "mlp";  // --model mlp
  mlp[8] = "10";   // --max-steps 10
  const Args launch{"--standalone", "--nproc-per-node", "1", "--max-restarts", "3", "--"};
  auto withLaunch = [&](const Args& worker) {
    Args args = launch;
    args.insert(args.end(), worker.begin(), worker.end());
    return args;
  };
  ASSERT_EQ(runDdprun(withLaunch(mlp), {{"GLOO_SOCKET_IFNAME", "lo"}}, 120s).exitCode, 0);

  auto cnn = ddptrainArgs(dir.path());  // --model cnn on the mlp's checkpoints
  auto result = runDdprun(withLaunch(cnn), {{"GLOO_SOCKET_IFNAME", "lo"}}, 120s);
  EXPECT_EQ(result.exitCode, 2) << result.output;
  EXPECT_NE(result.output.find("written for another model"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("restarting the worker group"), std::string::npos) << result.output;

  auto diverging = ddptrainArgs(dir / "diverging");
  diverging.insert(diverging.end(), {"--lr", "1e30"});
  result = runDdprun(withLaunch(diverging), {{"GLOO_SOCKET_IFNAME", "lo"}}, 120s);
  EXPECT_EQ(result.exitCode, 3) << result.output;
  EXPECT_EQ(result.output.find("restarting the worker group"), std::string::npos) << result.output;
}

// The start-up summary: a 4-rank run printed 26 lines before its first step (one per rank
// per event); now one line per event, rank 0's, and the others' at debug.
TEST(DdptrainUnderDdprunTest, AFourRankRunSaysItsStartUpInAFewLines) {
  if (!fs::exists(kFashion)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const Args run{"--standalone",
                 "--nproc-per-node",
                 "4",
                 "--",
                 DDPTRAIN_BINARY,
                 "--model",
                 "mlp",
                 "--data",
                 "idx",
                 "--data-dir",
                 kFashion,
                 "--max-steps",
                 "5"};
  auto linesBeforeTheFirstStep = [](const std::string& output) {
    std::istringstream lines(output);
    int before = 0;
    for (std::string line; std::getline(lines, line); ++before) {
      if (line.find(" step=") != npos) return before;
    }
    return -1;
  };
  const auto info = runDdprun(run, {{"GLOO_SOCKET_IFNAME", "lo"}}, 120s);
  ASSERT_EQ(info.exitCode, 0) << info.output;
  const int startUpLines = linesBeforeTheFirstStep(info.output);
  std::cout << "start-up lines before the first step at info: " << startUpLines << std::endl;
  EXPECT_GT(startUpLines, 0) << info.output;
  EXPECT_LE(startUpLines, 8) << info.output;
  EXPECT_EQ(info.output.find("[rank 3] [init]"), npos) << info.output;
  // The details are still there, at debug.
  const auto debug =
      runDdprun(run, {{"GLOO_SOCKET_IFNAME", "lo"}, {"DDPRUN_LOG_LEVEL", "debug"}}, 120s);
  ASSERT_EQ(debug.exitCode, 0) << debug.output;
  EXPECT_NE(debug.output.find("[rank 3] [init] event=group_ready"), npos) << debug.output;
  EXPECT_NE(debug.output.find("started rank=3 local_rank=3 pid="), npos) << debug.output;
}

TEST(DdptrainUnderDdprunTest, KilledWorkerIsRestartedAndTheRunResumesAndCompletes) {
  if (!fs::exists(kFashion)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TempDir dir;
  Args args{DDPRUN_BINARY,
            "--standalone",
            "--nproc-per-node",
            "2",
            "--max-restarts",
            "1",
            "--grace-period",
            "20",
            "--"};
  for (auto& a : ddptrainArgs(dir.path())) args.push_back(a);
  ChildProcess launcher(args, {{"GLOO_SOCKET_IFNAME", "lo"}});
  ASSERT_TRUE(waitFor([&] { return fs::exists(dir / "checkpoint-00000020.pt.json"); }, 120s));
  const auto workers = childrenOf(launcher.pid());
  ASSERT_EQ(workers.size(), 2u);
  const auto killedAt = std::chrono::steady_clock::now();
  kill(workers[1], SIGKILL);
  // The survivor is torn down (or fails on the lost peer) well within the grace period.
  ASSERT_TRUE(waitFor([&] { return !processAlive(workers[0]); }, 20s));
  EXPECT_LT(std::chrono::steady_clock::now() - killedAt, 20s);
  auto result = launcher.wait(240s);
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 0);
  EXPECT_NE(result.output.find("restarting the worker group: restart 1 of 1"), std::string::npos);
  EXPECT_NE(result.output.find("event=resumed step="), std::string::npos);
  EXPECT_TRUE(fs::exists(dir / "checkpoint-00000150.pt"));
}

TEST(DdptrainUnderDdprunTest, SigtermMakesTheWorkersCheckpointAndExit143WithNoOrphan) {
  if (!fs::exists(kFashion)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TempDir dir;
  Args args{DDPRUN_BINARY, "--standalone", "--nproc-per-node", "2", "--grace-period", "30", "--"};
  for (auto& a : ddptrainArgs(dir.path())) args.push_back(a);
  ChildProcess launcher(args, {{"GLOO_SOCKET_IFNAME", "lo"}});
  ASSERT_TRUE(waitFor([&] { return fs::exists(dir / "checkpoint-00000010.pt.json"); }, 120s));
  const auto workers = childrenOf(launcher.pid());
  ASSERT_EQ(workers.size(), 2u);
  kill(launcher.pid(), SIGTERM);
  auto result = launcher.wait(60s);
  SCOPED_TRACE(result.output);
  EXPECT_EQ(result.exitCode, 143);
  EXPECT_NE(result.output.find("event=stopping signal=Terminated"), std::string::npos);
  EXPECT_EQ(result.output.find("grace period: SIGKILL"), std::string::npos);
  for (pid_t pid : workers) EXPECT_FALSE(processAlive(pid)) << "orphan pid " << pid;
  // The checkpoint written on SIGTERM is the newest, past step 10.
  int newest = 0;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    std::smatch m;
    const auto name = entry.path().filename().string();
    if (std::regex_match(name, m, std::regex(R"(checkpoint-(\d+)\.pt)"))) {
      newest = std::max(newest, std::stoi(m[1]));
    }
  }
  EXPECT_GT(newest, 10);
  EXPECT_LT(newest, 150);
}

}  // namespace
}  // namespace ddp::testing
