// parseInteger: the one integer parser of variables, flags and ddptrain options, and the
// `found` text each kind of bad input gets.
#include "runtime/env/value_parser.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <tuple>

namespace ddp::env {
namespace {

TEST(ParseIntegerTest, AcceptsDecimalDigitsInRange) {
  EXPECT_EQ(parseInteger("0", 0, 10).value, 0);
  EXPECT_EQ(parseInteger("007", 0, 10).value, 7);
  EXPECT_EQ(parseInteger("9223372036854775807", 0, 9223372036854775807LL).value,
            9223372036854775807LL);
}

TEST(ParseIntegerTest, SaysWhatItFoundInstead) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "an empty value"},
      {" 1", "whitespace around the number"},
      {"1\n", "whitespace around the number"},
      {"-1", "a negative number"},
      {"+1", "'+1', which is not a whole decimal number"},
      {"1.5", "'1.5', which is not a whole decimal number"},
      {"0x10", "'0x10', which is not a whole decimal number"},
      {"11", "11, which is above 10"},
      {"99999999999999999999", "99999999999999999999, which is above 10"},
      {"2", "2, which is below 3"},
  };
  for (const auto& [text, found] : cases) {
    const auto parsed = parseInteger(text, text == "2" ? 3 : 0, 10);
    EXPECT_FALSE(parsed.value.has_value()) << "'" << text << "'";
    EXPECT_EQ(parsed.found, found) << "'" << text << "'";
  }
}

// Timeouts from variables (DDPRUN_RDZV_TIMEOUT, DDPRUN_COLLECTIVE_TIMEOUT): 1e300 once
// became a negative number of milliseconds (a deadline in the past) and inf undefined
// behaviour.
TEST(SplitListTest, KeepsEmptyItems) {
  using Items = std::vector<std::string>;
  EXPECT_EQ(splitList("/usr/bin:/bin", ':'), (Items{"/usr/bin", "/bin"}));
  EXPECT_EQ(splitList("0,1,", ','), (Items{"0", "1", ""}));
  EXPECT_EQ(splitList(":a", ':'), (Items{"", "a"}));
  EXPECT_EQ(splitList("", ','), (Items{""}));
}

TEST(ParseSecondsTest, AcceptsDecimalSecondsUpToAWeek) {
  using std::chrono::milliseconds;
  EXPECT_EQ(parseSeconds("30").value, milliseconds(30000));
  EXPECT_EQ(parseSeconds("0.5").value, milliseconds(500));
  EXPECT_EQ(parseSeconds(".25").value, milliseconds(250));
  EXPECT_EQ(parseSeconds("1e3").value, milliseconds(1000000));
  EXPECT_EQ(parseSeconds("0.001").value, milliseconds(1));
  EXPECT_EQ(parseSeconds("604800").value, milliseconds(604800000));
  EXPECT_EQ(parseSeconds("90", 60).found, "90, which is above 60");
  EXPECT_EQ(secondsExpectation(), "a positive number of seconds, at most 604800");
}

TEST(ParseSecondsTest, SaysWhatItFoundInstead) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "an empty value"},
      {" 1", "whitespace around the number"},
      {"-1", "a negative number"},
      {"soon", "'soon', which is not a number of seconds"},
      {"inf", "'inf', which is not a number of seconds"},
      {"nan", "'nan', which is not a number of seconds"},
      {"0x10", "'0x10', which is not a number of seconds"},
      {"1.5s", "'1.5s', which is not a number of seconds"},
      {"604801", "604801, which is above 604800"},
      {"1e300", "1e300, which is above 604800"},
      {"1e999", "1e999, which is above 604800"},
      {"0", "0, which is below 0.001 (1 ms)"},
      {"0.0004", "0.0004, which is below 0.001 (1 ms)"},
      {"1e-999", "1e-999, which is below 0.001 (1 ms)"},
  };
  for (const auto& [text, found] : cases) {
    const auto parsed = parseSeconds(text);
    EXPECT_FALSE(parsed.value.has_value()) << "'" << text << "'";
    EXPECT_EQ(parsed.found, found) << "'" << text << "'";
  }
}

// File arguments are checked before they are opened: a FIFO would wait for a writer (or a
// reader) forever, a directory or a device read as a file fails obscurely.
TEST(CheckPathTest, SaysWhatThePathIsInstead) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("value_parser_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string file = (dir / "file").string();
  const std::string fifo = (dir / "fifo").string();
  const std::string missing = (dir / "missing").string();
  std::ofstream(file) << "x";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  using K = FileKind;
  EXPECT_FALSE(checkPath(file, K::kRegularFile, false));
  EXPECT_FALSE(checkPath(dir.string(), K::kDirectory, false));
  EXPECT_FALSE(checkPath("/dev/null", K::kWritableFile, false));
  EXPECT_FALSE(checkPath(missing, K::kWritableFile, true));
  const std::vector<std::tuple<std::string, K, bool, std::string, std::string>> cases = {
      {fifo, K::kRegularFile, false, "a regular file", "a FIFO (named pipe)"},
      {dir.string(), K::kRegularFile, false, "a regular file", "a directory"},
      {"/dev/zero", K::kRegularFile, false, "a regular file", "a character device"},
      {missing, K::kRegularFile, false, "a regular file",
       "nothing that can be read (No such file or directory)"},
      {file, K::kDirectory, true, "a directory", "a regular file"},
      {fifo, K::kWritableFile, true, "a regular file or /dev/null", "a FIFO (named pipe)"},
      {dir.string(), K::kWritableFile, true, "a regular file or /dev/null", "a directory"},
      {file + "/below", K::kWritableFile, true, "a regular file or /dev/null",
       "nothing that can be read (Not a directory)"},
  };
  for (const auto& [path, kind, mayBeMissing, expected, found] : cases) {
    const auto problem = checkPath(path, kind, mayBeMissing);
    ASSERT_TRUE(problem.has_value()) << path;
    EXPECT_EQ(problem->expected, expected) << path;
    EXPECT_EQ(problem->found, found) << path;
  }
  std::filesystem::remove_all(dir);
}

TEST(DescribeBadValueTest, OneShapeForSetAndUnset) {
  EXPECT_EQ(describeBadValue("--nnodes", "x", integerExpectation(1, 4), "'x'", "Fix it."),
            "--nnodes=x: expected a decimal integer in [1, 4]; found 'x'. Fix it.");
  EXPECT_EQ(describeBadValue("MASTER_ADDR", std::nullopt, "a host", "nothing", ""),
            "MASTER_ADDR (unset): expected a host; found nothing.");
}

}  // namespace
}  // namespace ddp::env
