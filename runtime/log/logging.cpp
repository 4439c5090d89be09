// See Note [spdlog behind a string boundary] in logging.h: this file is compiled
// without LibTorch's include path.
#include "runtime/log/logging.h"

#include <cstdlib>
#include <mutex>
#include <stdexcept>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace ddp::log {
namespace {

std::mutex setupMutex;
std::shared_ptr<spdlog::logger> logger;

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
    logger = std::make_shared<spdlog::logger>(
        "ddprun", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] [rank -] %v");
    logger->set_level(toSpdlog(levelFromEnv()));
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
  throw std::invalid_argument("unknown log level '" + std::string(name) +
                              "': expected one of debug, info, warn, error, off");
}

Level levelFromEnv(Level fallback) {
  const char* value = std::getenv("DDPRUN_LOG_LEVEL");
  if (!value || !*value) return fallback;
  try {
    return parseLevel(value);
  } catch (const std::invalid_argument&) {
    return fallback;
  }
}

void setup(std::string_view rankTag, Level level) {
  auto& l = get();
  l.set_pattern(fmt::format("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] [rank {}] %v", rankTag));
  l.set_level(toSpdlog(level));
}

bool enabled(Level level) { return get().should_log(toSpdlog(level)); }

void write(Level level, std::string_view component, std::string_view message) {
  get().log(toSpdlog(level), "[{}] {}", component, message);
}

}  // namespace ddp::log
