// The one logging setup of ddprun: spdlog underneath, every line tagged with rank and
// component, level from --log-level or DDPRUN_LOG_LEVEL.
//
// Note [spdlog behind a string boundary]: LibTorch's headers carry fmt 12 (header-only
// here), Debian's spdlog 1.10 is built against fmt 9 and does not compile with fmt 12.
// So callers format with the fmt their translation unit sees (the templates below) and
// hand a finished string to logging.cpp, the only file that includes spdlog; it is
// compiled without torch's include path. The two fmt copies live in different inline
// namespaces (fmt::v9, fmt::v12) and never meet.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace ddp::log {

enum class Level { kDebug, kInfo, kWarn, kError, kOff };

// "debug", "info", "warn", "error", "off"; throws std::invalid_argument otherwise.
Level parseLevel(std::string_view name);

// Called once per process; later calls change rank tag and level. Until then, lines go
// to stderr at info level with rank "-".
void setup(std::string_view rankTag, Level level);
// The level from DDPRUN_LOG_LEVEL if set and valid, else `fallback`.
Level levelFromEnv(Level fallback = Level::kInfo);

bool enabled(Level level);
void write(Level level, std::string_view component, std::string_view message);

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
