// See Note [spdlog behind a string boundary] in logging.h: this file is compiled
// without LibTorch's include path.
#include "runtime/log/logging.h"

#include "runtime/env/variables.h"
#include "runtime/error.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace ddp::log {
namespace {

std::mutex setupMutex;
std::shared_ptr<spdlog::logger> logger;
Level activeLevel = Level::kInfo;

std::string pattern(std::string_view rankTag) {
  return "[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] [rank " + std::string(rankTag) + "] %v";
}

// DDPRUN_LOG_LEVEL for a program that never called setup(); a bad value counts as unset
// here (nothing can report it yet), resolveLevel() reports it.
Level levelFromEnvOrInfo() {
  try {
    return resolveLevel(std::nullopt);
  } catch (const ConfigError&) {
    return Level::kInfo;
  }
}

spdlog::level::level_enum toSpdlog(Level level) {
  switch (level) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
    case Level::kOff:
      return spdlog::level::off;
  }
  return spdlog::level::info;
}

spdlog::logger& get() {
  std::lock_guard<std::mutex> lock(setupMutex);
  if (!logger) {
    logger = std::make_shared<spdlog::logger>("ddprun",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
    logger->set_pattern(pattern("-"));
    activeLevel = levelFromEnvOrInfo();
    logger->set_level(toSpdlog(activeLevel));
  }
  return *logger;
}

}  // namespace

Level parseLevel(std::string_view name) {
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn" || name == "warning") return Level::kWarn;
  if (name == "error") return Level::kError;
  if (name == "off") return Level::kOff;
  throw ConfigError("unknown log level '" + std::string(name) +
                    "': expected one of debug, info, warn, error, off");
}

Level resolveLevel(const std::optional<std::string>& flag) {
  const char* variable = std::getenv(env::var::kLogLevel);
  const bool fromFlag = flag.has_value();
  if (!fromFlag && (!variable || !*variable)) return Level::kInfo;
  const std::string value = fromFlag ? *flag : std::string(variable);
  try {
    return parseLevel(value);
  } catch (const ConfigError&) {
    throw ConfigError(
        (fromFlag ? std::string("--log-level=") : std::string("DDPRUN_LOG_LEVEL=")) + value +
        ": expected one of debug, info, warn, error, off; found an unknown "
        "level. " +
        (fromFlag ? "Pass one of those." : "Fix DDPRUN_LOG_LEVEL where it is set, or unset it."));
  }
}

void setup(std::string_view rankTag, Level newLevel) {
  auto& l = get();
  std::lock_guard<std::mutex> lock(setupMutex);
  l.set_pattern(pattern(rankTag));
  activeLevel = newLevel;
  l.set_level(toSpdlog(newLevel));
}

void setRankTag(std::string_view rankTag) {
  auto& l = get();
  std::lock_guard<std::mutex> lock(setupMutex);
  l.set_pattern(pattern(rankTag));
}

Level currentLevel() {
  get();
  std::lock_guard<std::mutex> lock(setupMutex);
  return activeLevel;
}

bool enabled(Level level) { return get().should_log(toSpdlog(level)); }

namespace {

// Note [Status line].
std::mutex statusMutex;
std::string statusDrawn;  // what was drawn, escapes included; "" when none

void eraseStatus() {
  if (statusDrawn.empty()) return;
  std::fputs(stderrIsTerminal() ? "\r\033[K" : "\r", stderr);
}

void drawStatus() {
  if (statusDrawn.empty()) return;
  std::fputs(statusDrawn.c_str(), stderr);
  std::fflush(stderr);
}

}  // namespace

bool stderrIsTerminal() {
  static const bool terminal = isatty(STDERR_FILENO) == 1;
  return terminal;
}

void showStatusLine(std::string_view text) {
  std::lock_guard<std::mutex> lock(statusMutex);
  std::string drawn;
  if (!text.empty()) {
    drawn = "\r";
    winsize size{};
    if (stderrIsTerminal() && ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 1 &&
        text.size() >= size.ws_col) {
      text = text.substr(0, size.ws_col - 1);  // a wrapped line could not be redrawn
    }
    drawn.append(text);
    if (stderrIsTerminal()) drawn.append("\033[K");
  }
  if (drawn == statusDrawn) return;
  if (drawn.empty()) eraseStatus();
  statusDrawn = std::move(drawn);
  if (statusDrawn.empty()) {
    std::fflush(stderr);
  } else {
    drawStatus();
  }
}

void write(Level level, std::string_view component, std::string_view message) {
  auto& logger = get();
  if (!logger.should_log(toSpdlog(level))) return;
  std::lock_guard<std::mutex> lock(statusMutex);
  if (statusDrawn.empty()) {
    logger.log(toSpdlog(level), "[{}] {}", component, message);
    return;
  }
  eraseStatus();
  logger.log(toSpdlog(level), "[{}] {}", component, message);
  logger.flush();
  drawStatus();
}

void flush() { get().flush(); }

}  // namespace ddp::log
