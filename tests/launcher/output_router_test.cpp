// OutputRouter: prefixed lines, streams kept apart, torchrun's file layout and output flags,
// partial lines after the delay, '\r' lines on a pipe and on a terminal (Note [Live output]).
#include "launcher/output_router.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace ddp::launcher {
namespace {

using namespace std::chrono_literals;
using Clock = OutputRouter::Clock;

// A console made of two pipes, read back after the router is done.
struct Console {
  int out[2], err[2];
  Console() {
    EXPECT_EQ(pipe2(out, O_NONBLOCK), 0);
    EXPECT_EQ(pipe2(err, O_NONBLOCK), 0);
    // Room for a whole overlong line: nobody reads until the router is done.
    fcntl(out[1], F_SETPIPE_SZ, 1 << 20);
  }
  ~Console() {
    for (int fd : {out[0], out[1], err[0], err[1]}) close(fd);
  }
  static std::string drain(int fd) {
    std::string all;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) all.append(buf, static_cast<size_t>(n));
    return all;
  }
  OutputOptions options() const {
    OutputOptions o;
    o.consoleStdout = out[1];
    o.consoleStderr = err[1];
    return o;
  }
};

std::string readFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

const Clock::time_point t0 = Clock::now();

TEST(OutputRouterTest, PrefixesWholeLinesAndKeepsStreamsApart) {
  Console console;
  OutputRouter router(console.options(), 0, 2);
  router.feed(0, Stream::kStdout, "hel", t0);
  router.feed(1, Stream::kStdout, "other\n", t0);
  router.feed(0, Stream::kStdout, "lo\nsecond", t0 + 10ms);
  router.feed(1, Stream::kStderr, "warning: x\n", t0);
  EXPECT_EQ(Console::drain(console.out[0]), "[rank1]: other\n[rank0]: hello\n");
  router.finish(0, Stream::kStdout);  // the unterminated last line
  EXPECT_EQ(Console::drain(console.out[0]), "[rank0]: second\n");
  EXPECT_EQ(Console::drain(console.err[0]), "[rank1]: warning: x\n");
}

TEST(OutputRouterTest, CutsOverlongLines) {
  Console console;
  OutputRouter router(console.options(), 0, 4);
  router.feed(3, Stream::kStdout, std::string(OutputRouter::kMaxLineBytes + 10, 'a'), t0);
  const auto out = Console::drain(console.out[0]);
  EXPECT_EQ(out, "[rank3]: " + std::string(OutputRouter::kMaxLineBytes, 'a') + "\n");
}

TEST(OutputRouterTest, KeepsTheLastLinesOfEachRank) {
  Console console;
  auto options = console.options();
  options.lastLinesKept = 3;
  OutputRouter router(options, 0, 3);
  for (int i = 0; i < 5; ++i) {
    router.feed(2, Stream::kStdout, "line" + std::to_string(i) + "\n", t0);
  }
  router.feed(2, Stream::kStderr, "boom\n", t0);
  EXPECT_EQ(router.lastLines(2), std::vector<std::string>({"line3", "line4", "[stderr] boom"}));
  EXPECT_TRUE(router.lastLines(0).empty());
}

// torchrun's layout: <run dir>/attempt_<k>/<local_rank>/{stdout,stderr}.log, the worker's
// bytes as written; --redirects per local rank ("0:1": local rank 0's stdout).
TEST(OutputRouterTest, WritesTorchrunsLayoutAndHonoursPerRankRedirects) {
  Console console;
  auto options = console.options();
  options.runLogDir = ::testing::TempDir() + "/router_logs/none_abc";
  std::filesystem::remove_all(options.runLogDir);
  options.redirects = *parseStreamSelection("0:1");
  {
    OutputRouter router(options, 2, 2);
    EXPECT_EQ(router.workerLogDir(1), options.runLogDir + "/attempt_2/1");
    router.feed(0, Stream::kStdout, "to the file\n", t0);
    router.feed(1, Stream::kStdout, "to both\n", t0);
    router.feed(0, Stream::kStderr, "bar\r50%\r100%\n", t0);
  }
  EXPECT_EQ(Console::drain(console.out[0]), "[rank1]: to both\n");
  EXPECT_EQ(Console::drain(console.err[0]), "[rank0]: 100%\n");
  EXPECT_EQ(readFile(options.runLogDir + "/attempt_2/0/stdout.log"), "to the file\n");
  EXPECT_EQ(readFile(options.runLogDir + "/attempt_2/1/stdout.log"), "to both\n");
  EXPECT_EQ(readFile(options.runLogDir + "/attempt_2/0/stderr.log"), "bar\r50%\r100%\n");
  // Every local rank has its directory from the start (TORCHELASTIC_ERROR_FILE is in it).
  EXPECT_TRUE(std::filesystem::is_directory(options.runLogDir + "/attempt_2/1"));
}

// The same restart count again within one run (an elastic round after a membership change,
// which is not a failure): the earlier round's lines stay. A new ddprun run has a run
// directory of its own (makeRunLogDir), so nothing of another run is appended to.
TEST(OutputRouterTest, AnElasticRoundOfTheSameAttemptNumberAppends) {
  Console console;
  auto options = console.options();
  options.runLogDir = ::testing::TempDir() + "/router_logs_again";
  std::filesystem::remove_all(options.runLogDir);
  OutputRouter(options, 0, 1).feed(0, Stream::kStdout, "first round\n", t0);
  OutputRouter(options, 0, 1).feed(0, Stream::kStdout, "next round\n", t0);
  EXPECT_EQ(readFile(options.runLogDir + "/attempt_0/0/stdout.log"), "first round\nnext round\n");
}

TEST(OutputRouterTest, LocalRanksFilterKeepsOthersOffTheConsoleOnly) {
  Console console;
  auto options = console.options();
  options.localRanksShown = {1};
  options.runLogDir = ::testing::TempDir() + "/router_filter";
  std::filesystem::remove_all(options.runLogDir);
  OutputRouter router(options, 0, 2);
  router.feed(0, Stream::kStdout, "hidden\n", t0);
  router.feed(0, Stream::kStderr, "partial", t0);
  router.flushDue(t0 + 1s);
  router.feed(1, Stream::kStdout, "shown\n", t0);
  EXPECT_EQ(Console::drain(console.out[0]), "[rank1]: shown\n");
  EXPECT_EQ(Console::drain(console.err[0]), "");
  EXPECT_EQ(router.lastLines(0), std::vector<std::string>({"hidden"}));  // the report keeps it
  EXPECT_EQ(readFile(options.runLogDir + "/attempt_0/0/stdout.log"), "hidden\n");
}

// print("Loading...", end="") then, seconds later, print(" done").
TEST(OutputRouterTest, APartialLineGoesOutAfterTheDelayAndTheRestAsTheNextLine) {
  Console console;
  OutputRouter router(console.options(), 0, 1);
  router.feed(0, Stream::kStdout, "Loading...", t0);
  EXPECT_EQ(router.nextFlushTime(), t0 + 100ms);
  router.flushDue(t0 + 99ms);
  EXPECT_EQ(Console::drain(console.out[0]), "");
  router.flushDue(t0 + 100ms);
  EXPECT_EQ(Console::drain(console.out[0]), "[rank0]: Loading...\n");
  EXPECT_FALSE(router.nextFlushTime().has_value());
  router.feed(0, Stream::kStdout, " done\n", t0 + 3s);
  EXPECT_EQ(Console::drain(console.out[0]), "[rank0]:  done\n");
  EXPECT_EQ(router.lastLines(0), std::vector<std::string>({"Loading... done"}));
}

// An unbuffered Python print() writes the text and the '\n' in two writes.
TEST(OutputRouterTest, ALineCompletedWithinTheDelayGoesOutWhole) {
  Console console;
  OutputRouter router(console.options(), 0, 1);
  router.feed(0, Stream::kStdout, "hello", t0);
  router.feed(0, Stream::kStdout, "\n", t0 + 1ms);
  EXPECT_FALSE(router.nextFlushTime().has_value());
  router.flushDue(t0 + 1s);
  EXPECT_EQ(Console::drain(console.out[0]), "[rank0]: hello\n");
}

// A tqdm bar on a pipe: its first state after the delay, then at most one state per
// carriageReturnInterval, and the final state at its '\n'.
TEST(OutputRouterTest, ACarriageReturnLineOnAPipeDoesNotFlood) {
  Console console;
  OutputRouter router(console.options(), 0, 1);
  router.feed(0, Stream::kStderr, "\r 10%", t0);
  router.flushDue(t0 + 100ms);
  EXPECT_EQ(Console::drain(console.err[0]), "[rank0]:  10%\n");
  for (int percent = 20; percent <= 90; percent += 10) {
    router.feed(0, Stream::kStderr, "\r " + std::to_string(percent) + "%", t0 + percent * 10ms);
    router.flushDue(t0 + percent * 10ms + 100ms);
  }
  EXPECT_EQ(Console::drain(console.err[0]), "");
  EXPECT_EQ(router.nextFlushTime(), t0 + 100ms + 10s);
  router.flushDue(t0 + 100ms + 10s);
  EXPECT_EQ(Console::drain(console.err[0]), "[rank0]:  90%\n");
  router.feed(0, Stream::kStderr, "\r 90%\n", t0 + 11s);  // the state shown already
  router.feed(0, Stream::kStderr, "\r 50%\r100%\n", t0 + 11s);
  EXPECT_EQ(Console::drain(console.err[0]), "[rank0]: 100%\n");
  EXPECT_EQ(router.lastLines(0), std::vector<std::string>({"[stderr]  90%", "[stderr] 100%"}));
}

TEST(OutputRouterTest, ALineThatNamesItsRankIsNotPrefixedAgain) {
  Console console;
  auto options = console.options();
  options.firstGlobalRank = 2;
  OutputRouter router(options, 0, 2);
  router.feed(0, Stream::kStderr, "[rank2]: Traceback (most recent call last):\n", t0);
  router.feed(1, Stream::kStderr, "[2026-12-01 08:19:47.500] [info] [rank 3] [init] rank=3\n", t0);
  router.feed(0, Stream::kStderr, "[rank3]: not mine\n", t0);
  router.feed(1, Stream::kStderr, "plain\n", t0);  // global rank: the first + the local one
  EXPECT_EQ(Console::drain(console.err[0]),
            "[rank2]: Traceback (most recent call last):\n"
            "[2026-12-01 08:19:47.500] [info] [rank 3] [init] rank=3\n"
            "[rank2]: [rank3]: not mine\n"
            "[rank3]: plain\n");
}

TEST(OutputRouterTest, CarriesRankTagLooksForItsOwnRankNearTheStart) {
  EXPECT_TRUE(carriesRankTag("[rank0]: x", 0));
  EXPECT_TRUE(carriesRankTag("[rank 12] x", 12));
  EXPECT_FALSE(carriesRankTag("[rank 12] x", 1));
  EXPECT_FALSE(carriesRankTag("[rank1", 1));
  EXPECT_FALSE(carriesRankTag(std::string(OutputRouter::kRankTagSearchBytes, ' ') + "[rank0]", 0));
}

TEST(OutputRouterTest, LinePrefixTemplateIsTorchrunsWithItsMacros) {
  EXPECT_EQ(expandLinePrefix("[${role_name}${local_rank}]:", 5, 1, "trainer", "h"), "[trainer1]:");
  EXPECT_EQ(expandLinePrefix("${hostname}:${rank}: ", 5, 1, "default", "node7"), "node7:5: ");
  EXPECT_EQ(expandLinePrefix("$rank/$local_rank $$ ${other} $ranks $", 5, 1, "r", "h"),
            "5/1 $ ${other} $ranks $");
  Console console;
  auto options = console.options();
  options.linePrefixTemplate = "${hostname}:${rank}| ";
  options.hostname = "node7";
  OutputRouter router(options, 0, 1);
  router.feed(0, Stream::kStdout, "x\n", t0);
  EXPECT_EQ(Console::drain(console.out[0]), "node7:0| x\n");
}

TEST(OutputRouterTest, StreamSelectionIsTorchrunsStdSyntax) {
  const auto all = parseStreamSelection("3");
  ASSERT_TRUE(all);
  EXPECT_TRUE(all->includes(7, Stream::kStdout));
  EXPECT_TRUE(all->includes(7, Stream::kStderr));
  const auto map = parseStreamSelection("0:1,1:2,12:3");
  ASSERT_TRUE(map);
  EXPECT_TRUE(map->includes(0, Stream::kStdout));
  EXPECT_FALSE(map->includes(0, Stream::kStderr));
  EXPECT_TRUE(map->includes(1, Stream::kStderr));
  EXPECT_TRUE(map->includes(12, Stream::kStdout));
  EXPECT_FALSE(map->includes(2, Stream::kStdout));  // not named: 0
  EXPECT_TRUE(map->any());
  EXPECT_FALSE(parseStreamSelection("0:0")->any());
  for (const char* bad : {"", "4", "-1", "03", "0:4", "a:1", "0:1,", ",0:1", "0:1,0:2", "1:", ":1",
                          "0=1", "0:1;1:2", "99999:1"}) {
    EXPECT_FALSE(parseStreamSelection(bad).has_value()) << bad;
  }
}

// A terminal made of a pty in raw mode (no "\n" -> "\r\n"), `columns` wide.
struct Terminal {
  int master = -1, slave = -1;
  explicit Terminal(int columns) {
    winsize size{};
    size.ws_col = static_cast<unsigned short>(columns);
    size.ws_row = 24;
    EXPECT_EQ(openpty(&master, &slave, nullptr, nullptr, &size), 0);
    termios mode{};
    tcgetattr(slave, &mode);
    cfmakeraw(&mode);
    tcsetattr(slave, TCSANOW, &mode);
    fcntl(master, F_SETFL, O_NONBLOCK);
  }
  ~Terminal() {
    close(master);
    close(slave);
  }
  std::string drain() const { return Console::drain(master); }
  // The console's pipes, with `stream` going to this terminal.
  OutputOptions consoleWith(const Console& console, Stream stream) const {
    auto options = console.options();
    (stream == Stream::kStdout ? options.consoleStdout : options.consoleStderr) = slave;
    return options;
  }
};

// Rank 0's bar is drawn in place ('\r' kept, prefixed once per redraw), another line goes
// above it, and its '\n' leaves the final state on screen.
TEST(OutputRouterTest, OnATerminalRankZerosBarIsDrawnInPlace) {
  Terminal terminal(40);
  Console console;
  OutputRouter router(terminal.consoleWith(console, Stream::kStderr), 0, 2);
  router.feed(0, Stream::kStderr, "\r 10%", t0);
  router.flushDue(t0 + 100ms);
  EXPECT_EQ(terminal.drain(), "\r[rank0]:  10%\x1b[K");
  router.feed(0, Stream::kStderr, "\r 20%\r 30%", t0 + 150ms);
  router.flushDue(t0 + 250ms);
  EXPECT_EQ(terminal.drain(), "\r[rank0]:  30%\x1b[K");
  router.feed(1, Stream::kStderr, "rank one says\n", t0 + 300ms);
  router.feed(1, Stream::kStderr, "\r 5%", t0 + 300ms);  // not the live line's rank
  router.flushDue(t0 + 400ms);
  EXPECT_EQ(terminal.drain(),
            "\r\x1b[K[rank1]: rank one says\n\r[rank0]:  30%\x1b[K"
            "\r\x1b[K[rank1]:  5%\n\r[rank0]:  30%\x1b[K");
  router.feed(0, Stream::kStderr, "\r" + std::string(60, '#'), t0 + 500ms);
  router.flushDue(t0 + 600ms);
  EXPECT_EQ(terminal.drain(), "\r[rank0]: " + std::string(30, '#') + "\x1b[K");  // 39 columns
  router.feed(0, Stream::kStderr, "\r100%\n", t0 + 700ms);
  EXPECT_EQ(terminal.drain(), "\r[rank0]: 100%\x1b[K\n");
  EXPECT_FALSE(router.nextFlushTime().has_value());
}

// The launcher's own line (a worker exited) ends the live line; its state stays on screen.
TEST(OutputRouterTest, EndLiveLineLeavesTheBarAndMovesBelowIt) {
  Terminal terminal(80);
  Console console;
  OutputRouter router(terminal.consoleWith(console, Stream::kStdout), 0, 1);
  router.feed(0, Stream::kStdout, "epoch 1: ", t0);
  router.flushDue(t0 + 100ms);
  router.endLiveLine();
  EXPECT_EQ(terminal.drain(), "\r[rank0]: epoch 1: \x1b[K\n");
  router.feed(0, Stream::kStdout, "ok\n", t0 + 1s);
  EXPECT_EQ(terminal.drain(), "[rank0]: epoch 1: ok\n");
}

}  // namespace
}  // namespace ddp::launcher
