#include "launcher/output_router.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "runtime/env/value_parser.h"

namespace ddp::launcher {
namespace {

constexpr std::string_view kClearToEndOfLine = "\x1b[K";

// What a terminal shows of a line written with '\r' updates: the text after the last '\r'
// (a '\r' at the very end, as some bars write it, ends the state before it).
std::string_view visibleText(std::string_view line) {
  const auto end = line.find_last_not_of('\r');
  if (end == std::string_view::npos) return {};
  line = line.substr(0, end + 1);
  const auto cr = line.rfind('\r');
  return cr == std::string_view::npos ? line : line.substr(cr + 1);
}

// At most `columns` characters (UTF-8 code points: a tqdm bar draws with block characters)
// of `text`; a line wider than the terminal wraps, and '\r' then returns to its last row only.
std::string_view fitToColumns(std::string_view text, int columns) {
  if (columns <= 0) return text;
  int shown = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool continuationByte = (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80;
    if (!continuationByte && ++shown > columns) return text.substr(0, i);
  }
  return text;
}

int terminalColumns(int fd) {
  winsize size{};
  return ioctl(fd, TIOCGWINSZ, &size) == 0 ? size.ws_col : 0;
}

}  // namespace

// One stream of one worker.
struct OutputRouter::Sink {
  std::unique_ptr<std::ofstream> file;
  // The current line, not ended by '\n' yet. Once it holds a '\r', only the text from its
  // last '\r' is kept (the rest can never be shown again).
  std::string pending;
  // Of a plain partial line (no '\r'): the bytes already shown as a line of their own.
  std::size_t shownBytes = 0;
  // The line's visible text as last shown on a pipe (so that it is not shown twice), and
  // when, if it had a '\r' (the next state waits carriageReturnInterval).
  std::string shownState;
  std::optional<Clock::time_point> shownStateAt;
  // When the oldest byte not yet shown arrived; nullopt when nothing waits.
  std::optional<Clock::time_point> waitingSince;

  bool hasCarriageReturn() const { return pending.find('\r') != std::string::npos; }
};

bool StreamSelection::includes(int localRank, Stream stream) const {
  int value = allRanks;
  if (!perLocalRank.empty()) {
    const auto it = perLocalRank.find(localRank);
    value = it == perLocalRank.end() ? 0 : it->second;
  }
  return (value & (stream == Stream::kStdout ? 1 : 2)) != 0;
}

bool StreamSelection::any() const {
  return allRanks != 0 || std::any_of(perLocalRank.begin(), perLocalRank.end(),
                                      [](const auto& entry) { return entry.second != 0; });
}

std::optional<StreamSelection> parseStreamSelection(std::string_view text) {
  auto value = [](std::string_view digit) -> std::optional<int> {
    if (digit.size() != 1 || digit[0] < '0' || digit[0] > '3') return std::nullopt;
    return digit[0] - '0';
  };
  StreamSelection selection;
  if (const auto single = value(text)) {
    selection.allRanks = *single;
    return selection;
  }
  if (text.empty()) return std::nullopt;
  for (const auto& item : env::splitList(text, ',')) {
    const std::string_view entry = item;
    const auto colon = entry.find(':');
    if (colon == std::string_view::npos || colon == 0 || colon > 4) return std::nullopt;
    const auto rankText = entry.substr(0, colon);
    if (rankText.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
    const auto streams = value(entry.substr(colon + 1));
    if (!streams) return std::nullopt;
    const int localRank = std::stoi(std::string(rankText));
    if (!selection.perLocalRank.emplace(localRank, *streams).second) return std::nullopt;
  }
  return selection;
}

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

std::string makeRunLogDir(const std::string& logDir, const std::string& runId) {
  std::string pattern = (std::filesystem::path(logDir) / (runId + "_XXXXXXXX")).string();
  if (mkdtemp(pattern.data()) == nullptr) {
    throw std::system_error(errno, std::generic_category(),
                            "cannot create a run directory in " + logDir);
  }
  return pattern;
}

std::string expandLinePrefix(std::string_view pattern, int rank, int localRank,
                             std::string_view roleName, std::string_view hostname) {
  const std::pair<std::string_view, std::string> macros[] = {
      {"local_rank", std::to_string(localRank)},
      {"role_name", std::string(roleName)},
      {"hostname", std::string(hostname)},
      {"rank", std::to_string(rank)},
  };
  std::string out;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '$' || i + 1 == pattern.size()) {
      out.push_back(pattern[i]);
      continue;
    }
    if (pattern[i + 1] == '$') {
      out.push_back('$');
      ++i;
      continue;
    }
    const bool braced = pattern[i + 1] == '{';
    const auto nameStart = i + (braced ? 2 : 1);
    bool expanded = false;
    for (const auto& [name, value] : macros) {
      if (pattern.compare(nameStart, name.size(), name) != 0) continue;
      const auto after = nameStart + name.size();
      if (braced ? (after < pattern.size() && pattern[after] == '}')
                 : (after == pattern.size() ||
                    !(std::isalnum(static_cast<unsigned char>(pattern[after])) ||
                      pattern[after] == '_'))) {
        out += value;
        i = braced ? after : after - 1;
        expanded = true;
        break;
      }
    }
    if (!expanded) out.push_back('$');
  }
  return out;
}

bool carriesRankTag(std::string_view line, int rank) {
  line = line.substr(0, OutputRouter::kRankTagSearchBytes);
  const std::string number = std::to_string(rank);
  for (auto at = line.find("[rank"); at != std::string_view::npos;
       at = line.find("[rank", at + 1)) {
    auto rest = line.substr(at + 5);
    if (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (rest.substr(0, number.size()) == number && rest.size() > number.size() &&
        rest[number.size()] == ']') {
      return true;
    }
  }
  return false;
}

OutputRouter::OutputRouter(OutputOptions options, int attempt, int localWorldSize)
    : options_(std::move(options)),
      stdoutIsTerminal_(isatty(options_.consoleStdout) == 1),
      stderrIsTerminal_(isatty(options_.consoleStderr) == 1) {
  if (!options_.localRanksShown.empty()) liveLineOwnerRank_ = *options_.localRanksShown.begin();
  if (options_.runLogDir.empty()) return;
  attemptDir_ =
      (std::filesystem::path(options_.runLogDir) / ("attempt_" + std::to_string(attempt))).string();
  // The run directory is this run's own (makeRunLogDir); the same attempt number comes again
  // only for an elastic round after a membership change. Its logs are appended to, but an
  // error.json of the earlier round would be taken for this round's.
  for (int local = 0; local < localWorldSize; ++local) {
    std::filesystem::create_directories(workerLogDir(local));
    std::filesystem::remove(std::filesystem::path(workerLogDir(local)) / "error.json");
  }
}

OutputRouter::~OutputRouter() { endLiveLine(); }

std::string OutputRouter::workerLogDir(int localRank) const {
  if (attemptDir_.empty()) return "";
  return (std::filesystem::path(attemptDir_) / std::to_string(localRank)).string();
}

OutputRouter::Sink& OutputRouter::sink(int localRank, Stream stream) {
  auto& slot = sinks_[{localRank, stream}];
  if (slot) return *slot;
  slot = std::make_unique<Sink>();
  if (!attemptDir_.empty()) {
    const auto dir = std::filesystem::path(workerLogDir(localRank));
    std::filesystem::create_directories(dir);
    const auto path = dir / (stream == Stream::kStdout ? "stdout.log" : "stderr.log");
    // Appended: with --rdzv-backend c10d a membership change starts the workers again with
    // the same restart count (it is not a failure), and the earlier round's lines stay.
    slot->file = std::make_unique<std::ofstream>(path, std::ios::binary | std::ios::app);
    if (!*slot->file) {
      throw std::system_error(errno, std::generic_category(), "cannot write " + path.string());
    }
  }
  return *slot;
}

bool OutputRouter::shownOnConsole(int localRank, Stream stream) const {
  if (options_.redirects.includes(localRank, stream)) return false;
  return options_.localRanksShown.empty() || options_.localRanksShown.count(localRank) > 0;
}

int OutputRouter::consoleFd(Stream stream) const {
  return stream == Stream::kStdout ? options_.consoleStdout : options_.consoleStderr;
}

bool OutputRouter::isTerminal(int fd) const {
  return (fd == options_.consoleStdout && stdoutIsTerminal_) ||
         (fd == options_.consoleStderr && stderrIsTerminal_);
}

bool OutputRouter::mayBeLive(int localRank, Stream stream) const {
  if (localRank != liveLineOwnerRank_ || !isTerminal(consoleFd(stream))) return false;
  return !live_ || live_->owner == std::make_pair(localRank, stream);
}

std::string OutputRouter::prefixed(int localRank, std::string_view text) const {
  const int rank = options_.firstGlobalRank + localRank;
  if (carriesRankTag(text, rank)) return std::string(text);
  std::string out = options_.linePrefixTemplate.empty()
                        ? "[rank" + std::to_string(rank) + "]: "
                        : expandLinePrefix(options_.linePrefixTemplate, rank, localRank,
                                           options_.roleName, options_.hostname);
  out.append(text);
  return out;
}

void OutputRouter::writeConsole(int fd, std::string text) {
  // Note [Live output]: a line on the live line's terminal clears it and draws it again.
  if (live_ && isTerminal(fd)) {
    if (fd == live_->fd) {
      text = "\r" + std::string(kClearToEndOfLine) + text + live_->drawn;
    } else {
      writeAll(live_->fd, "\r" + std::string(kClearToEndOfLine));
      writeAll(fd, text);
      text = live_->drawn;
      fd = live_->fd;
    }
  }
  writeAll(fd, text);
}

void OutputRouter::showLine(int localRank, Stream stream, std::string_view text) {
  if (!shownOnConsole(localRank, stream)) return;
  writeConsole(consoleFd(stream), prefixed(localRank, text) + "\n");
}

void OutputRouter::drawLive(int localRank, Stream stream, std::string_view state) {
  const int fd = consoleFd(stream);
  const auto line = prefixed(localRank, state);
  std::string drawn = "\r";
  drawn.append(fitToColumns(line, terminalColumns(fd) - 1));
  drawn.append(kClearToEndOfLine);
  if (live_ && live_->drawn == drawn) return;
  live_ = LiveLine{{localRank, stream}, fd, drawn};
  writeAll(fd, drawn);
}

void OutputRouter::remember(int localRank, Stream stream, std::string_view line) {
  auto& last = lastLines_[localRank];
  last.emplace_back(stream == Stream::kStderr ? "[stderr] " + std::string(line)
                                              : std::string(line));
  while (last.size() > options_.lastLinesKept) last.pop_front();
}

void OutputRouter::completeLine(int localRank, Stream stream, Sink& s, std::string_view line) {
  const auto state = visibleText(line);
  remember(localRank, stream, state);
  if (live_ && live_->owner == std::make_pair(localRank, stream)) {
    // The live line's final state replaces it, and the cursor moves below it.
    std::string final = "\r" + prefixed(localRank, state) + std::string(kClearToEndOfLine) + "\n";
    const int fd = live_->fd;
    live_.reset();
    writeAll(fd, final);
  } else if (line.find('\r') != std::string_view::npos) {
    if (state != s.shownState) showLine(localRank, stream, state);
  } else if (s.shownBytes == 0) {
    showLine(localRank, stream, line);
  } else if (s.shownBytes < line.size()) {
    showLine(localRank, stream, line.substr(s.shownBytes));
  }
  s.shownBytes = 0;
  s.shownState.clear();
  s.shownStateAt.reset();
  s.waitingSince.reset();
}

void OutputRouter::feed(int localRank, Stream stream, std::string_view bytes,
                        Clock::time_point now) {
  auto& s = sink(localRank, stream);
  if (s.file) {
    s.file->write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    s.file->flush();
  }
  while (!bytes.empty()) {
    const auto newline = bytes.find('\n');
    s.pending.append(bytes.substr(0, newline));
    if (newline == std::string_view::npos) break;
    completeLine(localRank, stream, s, s.pending);
    s.pending.clear();
    bytes.remove_prefix(newline + 1);
  }
  // Only the text from the last '\r' that has some after it can still be shown.
  const auto lastText = s.pending.find_last_not_of('\r');
  if (lastText != std::string::npos) {
    const auto cr = s.pending.rfind('\r', lastText);
    if (cr != std::string::npos && cr > 0) {
      s.pending.erase(0, cr);
      s.shownBytes = 0;
    }
  }
  while (s.pending.size() >= kMaxLineBytes) {
    const std::string head = s.pending.substr(0, kMaxLineBytes);
    s.pending.erase(0, kMaxLineBytes);
    completeLine(localRank, stream, s, head);
  }
  if (!s.pending.empty() && !s.waitingSince) s.waitingSince = now;
}

std::optional<OutputRouter::Clock::time_point> OutputRouter::nextFlushTime() const {
  std::optional<Clock::time_point> next;
  for (const auto& [key, s] : sinks_) {
    if (!s->waitingSince) continue;
    auto due = *s->waitingSince + options_.partialLineDelay;
    if (s->shownStateAt && !mayBeLive(key.first, key.second) && s->hasCarriageReturn()) {
      due = std::max(due, *s->shownStateAt + options_.carriageReturnInterval);
    }
    if (!next || due < *next) next = due;
  }
  return next;
}

void OutputRouter::flushDue(Clock::time_point now) {
  for (auto& [key, sinkPtr] : sinks_) {
    auto& s = *sinkPtr;
    const auto [localRank, stream] = key;
    if (!s.waitingSince || now < *s.waitingSince + options_.partialLineDelay) continue;
    if (!shownOnConsole(localRank, stream)) {
      s.waitingSince.reset();
      continue;
    }
    const auto state = visibleText(s.pending);
    if (mayBeLive(localRank, stream)) {
      drawLive(localRank, stream, state);
    } else if (s.hasCarriageReturn()) {
      if (s.shownStateAt && now < *s.shownStateAt + options_.carriageReturnInterval) continue;
      if (state != s.shownState) showLine(localRank, stream, state);
      s.shownState = state;
      s.shownStateAt = now;
    } else if (s.shownBytes < s.pending.size()) {
      showLine(localRank, stream, std::string_view(s.pending).substr(s.shownBytes));
      s.shownBytes = s.pending.size();
      s.shownState = s.pending;
    }
    s.waitingSince.reset();
  }
}

void OutputRouter::finish(int localRank, Stream stream) {
  auto& s = sink(localRank, stream);
  if (!s.pending.empty()) {
    const std::string line = std::move(s.pending);
    s.pending.clear();
    completeLine(localRank, stream, s, line);
  }
}

void OutputRouter::endLiveLine() {
  if (!live_) return;
  writeAll(live_->fd, "\n");
  live_.reset();
}

std::vector<std::string> OutputRouter::lastLines(int localRank) const {
  auto it = lastLines_.find(localRank);
  if (it == lastLines_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

}  // namespace ddp::launcher
