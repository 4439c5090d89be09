// Worker output: lines prefixed with the rank, to the launcher's own stdout/stderr (stdout
// lines to stdout, stderr lines to stderr), to per-rank log files in torchrun's layout, and
// the last lines of each worker kept for the failure report.
//
// Note [Live output]
// ~~~~~~~~~~~~~~~~~~
// Each console write is one write() of whole lines, so lines of different workers never
// interleave mid-line. A line is prefixed ("[rank3]: ", or --log-line-prefix-template)
// unless it already names its rank: "[rank3]: ..." (PyTorch's excepthook and TORCH_LOGS)
// or "... [rank 3] ..." (our runtime's log lines) within its first kRankTagSearchBytes.
// A worker's partial line (no '\n' yet: print(..., end=""), a tqdm bar) waits at most
// kPartialLineDelay (~100 ms) before it is shown; then it depends on the console:
//   - a terminal (isatty), for the first local rank shown on it: the partial line is the
//     "live line", drawn in place: "\r[rank0]: <text after the last '\r'>\e[K", redrawn as
//     '\r' updates come (at most every kPartialLineDelay), finished by its '\n'. A line of
//     another worker (or the launcher's own, endLiveLine()) clears it, goes out, and the
//     live line is drawn again below it. Only one live line exists: a terminal has one
//     cursor. It is cut to the terminal's width, or a wrapped line could not be redrawn.
//   - a pipe or file (kubectl logs, CI), and other ranks on a terminal: a partial line goes
//     out as a line of its own; what follows it goes out as the next line. A line updated
//     with '\r' goes out as its current state (the text after the last '\r') at most every
//     carriageReturnInterval (10 s), and its final state at its '\n': a tqdm bar of an hour
//     is ~360 lines, not one per update, and the log still shows progress.
// The log files get the worker's bytes as written, '\r' included (as torchrun's do).
// The last lines (for the failure report) are the final states of complete lines.
#pragma once

#include <chrono>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace ddp::launcher {

enum class Stream { kStdout, kStderr };

// torchrun's Std, per local rank: which streams a setting (--redirects, --tee) applies to.
// "0" none, "1" stdout, "2" stderr, "3" both, for every local rank; or a map
// "0:1,1:2" (local rank:value), where a local rank not named gets 0.
struct StreamSelection {
  int allRanks = 0;  // used when perLocalRank is empty
  std::map<int, int> perLocalRank;

  bool includes(int localRank, Stream stream) const;
  bool any() const;
};

// Parses torchrun's syntax; nullopt when `text` is neither a value nor a map.
std::optional<StreamSelection> parseStreamSelection(std::string_view text);

struct OutputOptions {
  // "" = no files. Otherwise the run's log directory (makeRunLogDir), and each attempt
  // writes <runLogDir>/attempt_<k>/<local_rank>/{stdout,stderr}.log.
  std::string runLogDir;
  // torchrun's --redirects: streams that go to the files only, not the console.
  StreamSelection redirects;
  // torchrun's --local-ranks-filter: the local ranks shown on the console; empty = all.
  // The files and the failure report keep every rank.
  std::set<int> localRanksShown;
  // torchrun's --log-line-prefix-template (${rank}, ${local_rank}, ${role_name},
  // ${hostname}); "" = "[rank${rank}]: ".
  std::string linePrefixTemplate;
  std::string roleName = "default";
  std::string hostname;
  int firstGlobalRank = 0;  // global rank = firstGlobalRank + local rank
  std::size_t lastLinesKept = 20;
  // Console file descriptors (tests pass pipes or a pty).
  int consoleStdout = 1;
  int consoleStderr = 2;
  // Note [Live output].
  std::chrono::milliseconds partialLineDelay{100};
  std::chrono::milliseconds carriageReturnInterval{10000};
};

class OutputRouter {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::size_t kMaxLineBytes = 64 * 1024;
  static constexpr std::size_t kRankTagSearchBytes = 64;

  // Creates <runLogDir>/attempt_<attempt>/<local_rank>/ for each of `localWorldSize`
  // workers. The same attempt number comes again only for an elastic round after a
  // membership change: its logs are appended to, and only a stale error.json is removed.
  // Throws std::system_error when it cannot.
  OutputRouter(OutputOptions options, int attempt, int localWorldSize);
  ~OutputRouter();

  // Bytes read from `localRank`'s stream: complete lines go out at once, a partial line
  // when it has waited (flushDue).
  void feed(int localRank, Stream stream, std::string_view bytes, Clock::time_point now);
  // Shows what has waited long enough (Note [Live output]).
  void flushDue(Clock::time_point now);
  // When flushDue has something to do next; nullopt when nothing waits.
  std::optional<Clock::time_point> nextFlushTime() const;
  // The stream ended: an unterminated last line goes out as it is.
  void finish(int localRank, Stream stream);
  // Ends the live line (its last state stays on screen) before the launcher writes to
  // the console itself.
  void endLiveLine();
  // The last lines of `localRank`, oldest first, stderr ones marked "[stderr] ".
  std::vector<std::string> lastLines(int localRank) const;
  // <runLogDir>/attempt_<attempt>/<localRank>, "" without files.
  std::string workerLogDir(int localRank) const;
  // <runLogDir>/attempt_<attempt>, "" without files.
  const std::string& attemptLogDir() const { return attemptDir_; }

 private:
  struct Sink;
  struct LiveLine {
    std::pair<int, Stream> owner;
    int fd = -1;
    std::string drawn;  // "\r<prefix><state>\e[K", written again after another line
  };

  Sink& sink(int localRank, Stream stream);
  bool shownOnConsole(int localRank, Stream stream) const;
  bool mayBeLive(int localRank, Stream stream) const;
  int consoleFd(Stream stream) const;
  bool isTerminal(int fd) const;
  std::string prefixed(int localRank, std::string_view text) const;
  void completeLine(int localRank, Stream stream, Sink& sink, std::string_view line);
  void showLine(int localRank, Stream stream, std::string_view text);
  void drawLive(int localRank, Stream stream, std::string_view state);
  void writeConsole(int fd, std::string text);
  void remember(int localRank, Stream stream, std::string_view line);

  OutputOptions options_;
  std::string attemptDir_;
  bool stdoutIsTerminal_ = false;
  bool stderrIsTerminal_ = false;
  int liveLineOwnerRank_ = 0;  // the first local rank shown on the console
  std::map<std::pair<int, Stream>, std::unique_ptr<Sink>> sinks_;
  std::map<int, std::deque<std::string>> lastLines_;
  std::optional<LiveLine> live_;
};

// Creates `logDir` (with its parents) and checks that a file can be created in it, as the
// router will for every rank: "" when it can, else what failed ("that it cannot create it:
// Read-only file system"). Called before any worker starts, so that an unwritable log
// directory is a usage error, not a failure of every attempt.
std::string prepareLogDir(const std::string& logDir);

// torchrun's run directory: a new <logDir>/<runId>_<random>, unique per launch so that
// runs sharing a --log-dir never mix. Throws std::system_error when it cannot.
std::string makeRunLogDir(const std::string& logDir, const std::string& runId);

// Expands torchrun's template: ${rank} / $rank, ${local_rank}, ${role_name}, ${hostname};
// "$$" is "$"; anything else stays as written (Python's Template.safe_substitute).
std::string expandLinePrefix(std::string_view pattern, int rank, int localRank,
                             std::string_view roleName, std::string_view hostname);

// Whether `line` already names rank `rank` near its start (Note [Live output]).
bool carriesRankTag(std::string_view line, int rank);

// Writes all of `data` to `fd`, retrying short writes and EINTR.
void writeAll(int fd, std::string_view data);

}  // namespace ddp::launcher
