#include "launcher/output_router.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace ddp::launcher {

void writeAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // the console is gone (closed pipe): the log files still get the line
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

std::string prepareLogDir(const std::string& logDir) {
  std::error_code error;
  std::filesystem::create_directories(logDir, error);
  if (error) return "that it cannot create it: " + error.message();
  const auto probe =
      std::filesystem::path(logDir) / (".ddprun-write-check-" + std::to_string(getpid()));
  const int fd = open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return std::string("that it cannot create a file in it: ") + std::strerror(errno);
  close(fd);
  unlink(probe.c_str());
  return "";
}

OutputRouter::OutputRouter(OutputOptions options, int attempt)
    : options_(std::move(options)), attempt_(attempt) {}

OutputRouter::Sink& OutputRouter::sink(int rank, Stream stream) {
  auto [it, inserted] = sinks_.try_emplace({rank, stream});
  if (inserted && !options_.logDir.empty()) {
    const auto dir = std::filesystem::path(options_.logDir) /
                     ("attempt_" + std::to_string(attempt_)) / ("rank_" + std::to_string(rank));
    std::filesystem::create_directories(dir);
    const auto path = dir / (stream == Stream::kStdout ? "stdout.log" : "stderr.log");
    // Appended: with --rdzv-backend c10d a membership change starts the workers again with
    // the same restart count (it is not a failure), and the earlier round's lines stay.
    it->second.file = std::make_unique<std::ofstream>(path, std::ios::binary | std::ios::app);
    if (!*it->second.file) {
      throw std::system_error(errno, std::generic_category(), "cannot write " + path.string());
    }
  }
  return it->second;
}

void OutputRouter::emit(int rank, Stream stream, Sink& sink, std::string_view line) {
  if (sink.file) {
    *sink.file << line << '\n';
    sink.file->flush();
  }
  const bool redirected =
      stream == Stream::kStdout ? options_.redirectStdout : options_.redirectStderr;
  if (!redirected) {
    std::string out = "[rank" + std::to_string(rank) + "]: ";
    out.append(line);
    out.push_back('\n');
    writeAll(stream == Stream::kStdout ? options_.consoleStdout : options_.consoleStderr, out);
  }
  auto& last = lastLines_[rank];
  last.emplace_back(stream == Stream::kStderr ? "[stderr] " + std::string(line)
                                              : std::string(line));
  while (last.size() > options_.lastLinesKept) last.pop_front();
}

void OutputRouter::feed(int rank, Stream stream, std::string_view bytes) {
  auto& s = sink(rank, stream);
  s.pending.append(bytes);
  std::size_t start = 0;
  while (true) {
    const auto newline = s.pending.find('\n', start);
    if (newline == std::string::npos) break;
    emit(rank, stream, s, std::string_view(s.pending).substr(start, newline - start));
    start = newline + 1;
  }
  s.pending.erase(0, start);
  while (s.pending.size() >= kMaxLineBytes) {
    emit(rank, stream, s, std::string_view(s.pending).substr(0, kMaxLineBytes));
    s.pending.erase(0, kMaxLineBytes);
  }
}

void OutputRouter::finish(int rank, Stream stream) {
  auto& s = sink(rank, stream);
  if (!s.pending.empty()) {
    emit(rank, stream, s, s.pending);
    s.pending.clear();
  }
}

std::vector<std::string> OutputRouter::lastLines(int rank) const {
  auto it = lastLines_.find(rank);
  if (it == lastLines_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

}  // namespace ddp::launcher
