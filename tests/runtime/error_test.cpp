// Note [Two error families]: every error class of the project belongs to one family, and
// the family alone decides the exit code; errors that are not ours are transient.
#include "runtime/error.h"

#include <gtest/gtest.h>

#include <c10/util/Exception.h>

#include "data/data_error.h"
#include "launcher/launch_plan.h"
#include "models/model_zoo.h"
#include "runtime/distributed.h"
#include "runtime/env/cluster_env.h"
#include "runtime/log/logging.h"
#include "runtime/rendezvous/tcp_store.h"
#include "runtime/train/checkpointer.h"

namespace ddp {
namespace {

TEST(ErrorFamiliesTest, PermanentErrorsExit2) {
  EXPECT_EQ(exitCodeFor(ConfigError("x")), kExitUsage);
  EXPECT_EQ(exitCodeFor(env::EnvError("RANK", "x", "a number", "x", "")), kExitUsage);
  EXPECT_EQ(exitCodeFor(launcher::LaunchError("x")), kExitUsage);
  EXPECT_EQ(exitCodeFor(data::DataError("x")), kExitUsage);
  EXPECT_EQ(exitCodeFor(models::ModelSpecError("x")), kExitUsage);
}

TEST(ErrorFamiliesTest, TransientErrorsExit200) {
  EXPECT_EQ(exitCodeFor(rendezvous::RendezvousError("x")), kExitTransient);
  EXPECT_EQ(exitCodeFor(train::CheckpointError("x")), kExitTransient);
  EXPECT_EQ(
      exitCodeFor(c10::DistBackendError({__func__, __FILE__, __LINE__}, "collective timed out")),
      kExitTransient);
  EXPECT_EQ(exitCodeFor(std::runtime_error("unforeseen")), kExitTransient);
}

TEST(ErrorFamiliesTest, CaughtAsTheirFamily) {
  EXPECT_THROW(throw models::ModelSpecError("x"), PermanentError);
  EXPECT_THROW(throw train::CheckpointError("x"), TransientError);
  EXPECT_THROW(throw env::EnvError("A", std::nullopt, "b", "c", ""), Error);
}

TEST(ErrorMessageTest, C10ErrorsLoseTheirBacktrace) {
  log::setup("-", log::Level::kInfo);
  try {
    TORCH_CHECK(false, "a check that failed");
  } catch (const c10::Error& e) {
    EXPECT_EQ(errorMessage(e), "a check that failed");
  }
  EXPECT_EQ(errorMessage(ConfigError("plain")), "plain");
}

// --log-level debug (DDPRUN_LOG_LEVEL=debug) is for whoever debugs ddprun or LibTorch:
// the C++ frames stay. errorMessage once stripped them at every level.
TEST(ErrorMessageTest, DebugLevelKeepsTheC10Backtrace) {
  log::setup("-", log::Level::kDebug);
  std::string message;
  try {
    TORCH_CHECK(false, "a check that failed");
  } catch (const c10::Error& e) {
    message = errorMessage(e);
  }
  log::setup("-", log::Level::kInfo);
  EXPECT_EQ(message.rfind("a check that failed", 0), 0u) << message;
  EXPECT_NE(message.find("Exception raised from"), std::string::npos) << message;
  EXPECT_EQ(errorMessage(ConfigError("plain")), "plain");
}

// Note [C10 backtraces]: after ddp::init, c10 captures the C++ frames of a c10::Error only
// at the debug log level, so that c10d's own warning lines (which print e.what()) carry
// none either. They carried some at every level.
TEST(ErrorMessageTest, InitCapturesC10FramesAtTheDebugLevelOnly) {
  setenv("GLOO_SOCKET_IFNAME", "lo", 1);
  InitOptions lone;
  lone.backend = "gloo";
  lone.environment = env::EnvMap{};  // one process, a free port on 127.0.0.1
  const auto dist = init(lone);
  auto whatOfACheck = [] {
    try {
      TORCH_CHECK(false, "a check that failed");
    } catch (const c10::Error& e) {
      return std::string(e.what());
    }
    return std::string("no c10::Error");
  };
  log::setup("-", log::Level::kInfo);
  const auto atInfo = whatOfACheck();
  log::setup("-", log::Level::kDebug);
  const auto atDebug = whatOfACheck();
  log::setup("-", log::Level::kInfo);
  EXPECT_EQ(atInfo.find("frame #"), std::string::npos) << atInfo;
  EXPECT_NE(atDebug.find("frame #0"), std::string::npos) << atDebug;
}

}  // namespace
}  // namespace ddp
