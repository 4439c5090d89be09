// OutputRouter: whole prefixed lines, streams kept apart, files, last lines.
#include "launcher/output_router.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace ddp::launcher {
namespace {

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

TEST(OutputRouterTest, PrefixesWholeLinesAndKeepsStreamsApart) {
  Console console;
  OutputRouter router(console.options(), 0);
  router.feed(0, Stream::kStdout, "hel");
  router.feed(1, Stream::kStdout, "other\n");
  router.feed(0, Stream::kStdout, "lo\nsecond");
  router.feed(1, Stream::kStderr, "warning: x\n");
  EXPECT_EQ(Console::drain(console.out[0]), "[rank1]: other\n[rank0]: hello\n");
  router.finish(0, Stream::kStdout);  // the unterminated last line
  EXPECT_EQ(Console::drain(console.out[0]), "[rank0]: second\n");
  EXPECT_EQ(Console::drain(console.err[0]), "[rank1]: warning: x\n");
}

TEST(OutputRouterTest, CutsOverlongLines) {
  Console console;
  OutputRouter router(console.options(), 0);
  router.feed(3, Stream::kStdout, std::string(OutputRouter::kMaxLineBytes + 10, 'a'));
  const auto out = Console::drain(console.out[0]);
  EXPECT_EQ(out, "[rank3]: " + std::string(OutputRouter::kMaxLineBytes, 'a') + "\n");
}

TEST(OutputRouterTest, KeepsTheLastLinesOfEachRank) {
  Console console;
  auto options = console.options();
  options.lastLinesKept = 3;
  OutputRouter router(options, 0);
  for (int i = 0; i < 5; ++i) router.feed(2, Stream::kStdout, "line" + std::to_string(i) + "\n");
  router.feed(2, Stream::kStderr, "boom\n");
  EXPECT_EQ(router.lastLines(2), std::vector<std::string>({"line3", "line4", "[stderr] boom"}));
  EXPECT_TRUE(router.lastLines(0).empty());
}

TEST(OutputRouterTest, WritesPerRankFilesAndHonoursRedirects) {
  Console console;
  auto options = console.options();
  options.logDir = ::testing::TempDir() + "/router_logs";
  std::filesystem::remove_all(options.logDir);
  options.redirectStdout = true;  // stdout: files only
  {
    OutputRouter router(options, 2);
    router.feed(1, Stream::kStdout, "to the file\n");
    router.feed(1, Stream::kStderr, "to both\n");
  }
  EXPECT_EQ(Console::drain(console.out[0]), "");
  EXPECT_EQ(Console::drain(console.err[0]), "[rank1]: to both\n");
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  EXPECT_EQ(read(options.logDir + "/attempt_2/rank_1/stdout.log"), "to the file\n");
  EXPECT_EQ(read(options.logDir + "/attempt_2/rank_1/stderr.log"), "to both\n");
  {
    // The same restart count again (an elastic round after a membership change): appended.
    OutputRouter router(options, 2);
    router.feed(1, Stream::kStdout, "next round\n");
  }
  EXPECT_EQ(read(options.logDir + "/attempt_2/rank_1/stdout.log"), "to the file\nnext round\n");
}

}  // namespace
}  // namespace ddp::launcher
