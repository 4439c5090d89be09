// Worker output: whole lines, prefixed with the rank, to the launcher's own stdout/stderr
// (stdout lines to stdout, stderr lines to stderr), optionally also to per-rank log files,
// and the last lines of each worker kept for the failure report.
//
// Each line reaches the console in one write(), so lines of different workers never
// interleave mid-line. A partial line waits for its newline (or the end of the stream);
// a line longer than kMaxLineBytes is cut there.
#pragma once

#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ddp::launcher {

enum class Stream { kStdout, kStderr };

struct OutputOptions {
  // "" = no files. Otherwise <logDir>/attempt_<k>/rank_<r>/{stdout,stderr}.log.
  std::string logDir;
  // torchrun's --redirects: which streams go to the files only, not the console.
  bool redirectStdout = false;
  bool redirectStderr = false;
  std::size_t lastLinesKept = 20;
  // Console file descriptors (tests pass pipes).
  int consoleStdout = 1;
  int consoleStderr = 2;
};

class OutputRouter {
 public:
  static constexpr std::size_t kMaxLineBytes = 64 * 1024;

  OutputRouter(OutputOptions options, int attempt);

  // Bytes read from `rank`'s stream; complete lines go out at once.
  void feed(int rank, Stream stream, std::string_view bytes);
  // The stream ended: an unterminated last line goes out as it is.
  void finish(int rank, Stream stream);
  // The last lines of `rank`, oldest first, stderr ones marked "[stderr] ".
  std::vector<std::string> lastLines(int rank) const;

 private:
  struct Sink {
    std::string pending;
    std::unique_ptr<std::ofstream> file;
  };
  Sink& sink(int rank, Stream stream);
  void emit(int rank, Stream stream, Sink& sink, std::string_view line);

  OutputOptions options_;
  int attempt_;
  std::map<std::pair<int, Stream>, Sink> sinks_;
  std::map<int, std::deque<std::string>> lastLines_;
};

// Creates `logDir` (with its parents) and checks that a file can be created in it, as the
// router will for every rank: "" when it can, else what failed ("that it cannot create it:
// Read-only file system"). Called before any worker starts, so that an unwritable log
// directory is a usage error, not a failure of every attempt.
std::string prepareLogDir(const std::string& logDir);

// Writes all of `data` to `fd`, retrying short writes and EINTR.
void writeAll(int fd, std::string_view data);

}  // namespace ddp::launcher
