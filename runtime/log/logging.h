// The one logging setup of ddprun: spdlog underneath, every line tagged with rank and
// component.
//
// Note [Log level precedence]
//   the program's flag (--log-level, or its config file)  >  DDPRUN_LOG_LEVEL  >  info
// A program resolves the level once (resolveLevel) and calls setup() once, before
// ddp::init(); init() then only tags the lines with the rank (setRankTag) and never
// touches the level. A program that calls neither logs at DDPRUN_LOG_LEVEL, else info.
//
// Note [spdlog behind a string boundary]: LibTorch's headers carry fmt 12 (header-only
// here), Debian's spdlog 1.10 is built against fmt 9 and does not compile with fmt 12.
// So callers format with the fmt their translation unit sees (the templates below) and
// hand a finished string to logging.cpp, the only file that includes spdlog; it is
// compiled without torch's include path. The two fmt copies live in different inline
// namespaces (fmt::v9, fmt::v12) and never meet.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace ddp::log {

enum class Level { kDebug, kInfo, kWarn, kError, kOff };

// "debug", "info", "warn" (or "warning"), "error", "off"; ConfigError otherwise.
Level parseLevel(std::string_view name);

// Note [Log level precedence]: `flag` when given, else DDPRUN_LOG_LEVEL when set, else
// info. Throws ConfigError naming the flag or the variable for an unknown level.
Level resolveLevel(const std::optional<std::string>& flag);

// Sets rank tag and level. Until a program calls it, lines go to stderr with rank "-" at
// DDPRUN_LOG_LEVEL (a bad value there counts as unset), else info.
void setup(std::string_view rankTag, Level level);
// Changes only the rank tag (ddp::init, once the rank is known).
void setRankTag(std::string_view rankTag);
Level currentLevel();

bool enabled(Level level);
void write(Level level, std::string_view component, std::string_view message);
// Before an _exit, which skips the logger's own flush.
void flush();

// Note [Status line]
// ~~~~~~~~~~~~~~~~~~
// One line kept at the bottom of stderr (rank 0's progress bar), redrawn in place while log
// lines scroll above it: write() takes it away before a line and draws it again after.
//   - stderr a terminal: "\r<text>\e[K" in place, cut to the terminal's width, and taken
//     away with "\r\e[K";
//   - stderr a pipe to ddprun (DDPRUN_PROGRESS=1): "\r<text>" with no newline, which ddprun's
//     output router shows as its live line (Note [Live output] in launcher/output_router.h)
//     on ddprun's terminal; a '\r' before each log line makes that line the next state.
// showStatusLine("") removes it. Nothing is drawn unless the program asks.
void showStatusLine(std::string_view text);
// Whether stderr is a terminal (the bar's width and escapes depend on it).
bool stderrIsTerminal();

template <typename... Args>
void atLevel(Level level, std::string_view component, fmt::format_string<Args...> format,
             Args&&... args) {
  if (enabled(level)) write(level, component, fmt::format(format, std::forward<Args>(args)...));
}

// A start-up event every rank goes through: rank 0 says it at info for the whole job, the
// others at debug, so that a job of N ranks prints one line per event, not N.
inline Level infoOnRankZero(int rank) { return rank == 0 ? Level::kInfo : Level::kDebug; }

template <typename... Args>
void debug(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(Level::kDebug)) {
    write(Level::kDebug, component, fmt::format(format, std::forward<Args>(args)...));
  }
}
template <typename... Args>
void info(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(Level::kInfo)) {
    write(Level::kInfo, component, fmt::format(format, std::forward<Args>(args)...));
  }
}
template <typename... Args>
void warn(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(Level::kWarn)) {
    write(Level::kWarn, component, fmt::format(format, std::forward<Args>(args)...));
  }
}
template <typename... Args>
void error(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(Level::kError)) {
    write(Level::kError, component, fmt::format(format, std::forward<Args>(args)...));
  }
}

}  // namespace ddp::log
