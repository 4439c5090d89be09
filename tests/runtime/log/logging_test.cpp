// Note [Log level precedence]: flag > DDPRUN_LOG_LEVEL > info, one setup, and ddp::init()
// keeps the level the program chose (it once reset it to DDPRUN_LOG_LEVEL or info).
#include "runtime/log/logging.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "runtime/distributed.h"

namespace ddp::log {
namespace {

// DDPRUN_LOG_LEVEL set (or unset) for one test.
class ScopedLevelVariable {
 public:
  explicit ScopedLevelVariable(const char* value) {
    if (value) {
      ::setenv("DDPRUN_LOG_LEVEL", value, 1);
    } else {
      ::unsetenv("DDPRUN_LOG_LEVEL");
    }
  }
  ~ScopedLevelVariable() { ::unsetenv("DDPRUN_LOG_LEVEL"); }
};

std::string configErrorOf(const std::optional<std::string>& flag) {
  try {
    resolveLevel(flag);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no ConfigError";
}

TEST(LogLevelTest, FlagThenVariableThenInfo) {
  {
    ScopedLevelVariable unset(nullptr);
    EXPECT_EQ(resolveLevel(std::nullopt), Level::kInfo);
    EXPECT_EQ(resolveLevel("debug"), Level::kDebug);
  }
  {
    ScopedLevelVariable warn("warn");
    EXPECT_EQ(resolveLevel(std::nullopt), Level::kWarn);
    EXPECT_EQ(resolveLevel("debug"), Level::kDebug) << "the flag wins";
  }
  {
    ScopedLevelVariable empty("");
    EXPECT_EQ(resolveLevel(std::nullopt), Level::kInfo) << "empty is unset";
  }
}

TEST(LogLevelTest, ABadLevelNamesWhereItCameFrom) {
  ScopedLevelVariable bad("loud");
  EXPECT_EQ(configErrorOf(std::nullopt),
            "DDPRUN_LOG_LEVEL=loud: expected one of debug, info, warn, error, off; found an "
            "unknown level. Fix DDPRUN_LOG_LEVEL where it is set, or unset it.");
  EXPECT_EQ(configErrorOf("chatty"),
            "--log-level=chatty: expected one of debug, info, warn, error, off; found an "
            "unknown level. Pass one of those.");
  EXPECT_EQ(resolveLevel("error"), Level::kError) << "a good flag makes the variable moot";
}

TEST(LogLevelTest, InitKeepsTheLevelTheProgramSet) {
  ScopedLevelVariable warn("warn");
  setup("-", Level::kDebug);
  auto dist = ddp::init({.backend = "gloo", .environment = env::EnvMap{}});
  EXPECT_EQ(currentLevel(), Level::kDebug);
  EXPECT_TRUE(enabled(Level::kDebug));
}

}  // namespace
}  // namespace ddp::log
