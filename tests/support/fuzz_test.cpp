// The fuzzer itself (tests/support/fuzz.h): inputs are a function of (seed, index), and
// each kind of finding (crash, hang, other exception, an allocation past the memory
// limit) is caught, reported with its input, and survived.
#include "tests/support/fuzz.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <stdexcept>
#include <thread>

#include "runtime/error.h"

namespace ddp::testing::fuzz {
namespace {

using namespace std::chrono_literals;

// Digits are accepted, anything else is a PermanentError; `trap` runs first.
Target digits(std::function<void(const std::string&)> trap = {}) {
  Target target{"self_test", {"123", "4567"}, {"9"}};
  target.parse = [trap](const std::string& input) {
    if (trap) trap(input);
    if (input.empty() || input.find_first_not_of("0123456789") != std::string::npos) {
      throw ConfigError("not digits");
    }
  };
  return target;
}

Settings inputs(std::int64_t iterations) {
  Settings settings;
  settings.iterations = iterations;
  settings.inputTimeLimit = 300ms;
  settings.memoryLimitBytes = std::size_t{1} << 30;
  return settings;
}

bool hasByte(const std::string& input, char byte) { return input.find(byte) != std::string::npos; }

TEST(FuzzTest, InputsAreAFunctionOfSeedAndIndex) {
  const Target target = digits();
  EXPECT_EQ(makeInput(target, 1, 0), "123");  // the corpus first, as it is
  EXPECT_EQ(makeInput(target, 1, 1), "4567");
  std::set<std::string> distinct;
  int sameUnderOtherSeed = 0;
  for (int i = 2; i < 202; ++i) {
    const std::string input = makeInput(target, 1, i);
    EXPECT_EQ(input, makeInput(target, 1, i)) << "input " << i << " is not reproducible";
    distinct.insert(input);
    sameUnderOtherSeed += input == makeInput(target, 2, i);
  }
  EXPECT_GT(distinct.size(), 100u);
  EXPECT_LT(sameUnderOtherSeed, 20);
}

TEST(FuzzTest, EveryInputIsCountedWhenNothingIsFound) {
  const Report report = run(digits(), inputs(3000));
  EXPECT_EQ(report.inputs, 3000);
  EXPECT_EQ(report.accepted + report.rejected, 3000);
  EXPECT_GT(report.accepted, 0);
  EXPECT_GT(report.rejected, 0);
  EXPECT_TRUE(report.findings.empty()) << report.describeFindings();
}

TEST(FuzzTest, ACrashIsReportedWithItsInputAndTheRunGoesOn) {
  const Report report = run(digits([](const std::string& input) {
                              if (hasByte(input, '\xff')) std::abort();
                            }),
                            inputs(3000));
  // About one input in 20 crashes: the run goes on past each, and stops at 20 of them.
  ASSERT_EQ(report.count("crash"), 20) << report.summary();
  EXPECT_GT(report.inputs, report.findings.back().index);
  EXPECT_EQ(report.accepted + report.rejected + report.count("crash"), report.inputs);
  for (const auto& finding : report.findings) {
    EXPECT_EQ(finding.kind, "crash");
    EXPECT_EQ(finding.detail, "killed by SIGABRT (Aborted)");
    EXPECT_TRUE(hasByte(finding.input, '\xff')) << escape(finding.input);
    EXPECT_EQ(finding.input, makeInput(digits(), 1, finding.index));
  }
  EXPECT_NE(report.summary().find("20 crashes, 0 hangs, 0 other exceptions; seed 1"),
            std::string::npos)
      << report.summary();
  EXPECT_NE(report.summary().find("(stopped at 20 findings)"), std::string::npos);
}

TEST(FuzzTest, AnExitIsACrash) {
  const Report report = run(digits([](const std::string& input) {
                              if (input == "4567") std::exit(3);
                            }),
                            inputs(10));
  ASSERT_EQ(report.findings.size(), 1u) << report.describeFindings();
  EXPECT_EQ(report.findings[0].index, 1);
  EXPECT_EQ(report.findings[0].detail, "exited with code 3");
  EXPECT_EQ(report.inputs, 10);
}

TEST(FuzzTest, AHangIsStoppedAtTheTimeLimit) {
  const Report report = run(digits([](const std::string& input) {
                              if (input == "4567") std::this_thread::sleep_for(1h);
                            }),
                            inputs(10));
  ASSERT_EQ(report.findings.size(), 1u) << report.describeFindings();
  EXPECT_EQ(report.findings[0].kind, "hang");
  EXPECT_EQ(report.findings[0].index, 1);
  EXPECT_EQ(report.inputs, 10);
  EXPECT_LT(report.seconds, 10);
}

TEST(FuzzTest, AnExceptionOfAnotherTypeIsAFinding) {
  const Report report = run(digits([](const std::string& input) {
                              if (hasByte(input, '\xff')) throw std::out_of_range("stoi");
                            }),
                            inputs(3000));
  EXPECT_GT(report.count("exception"), 0);
  EXPECT_EQ(report.count("exception"), static_cast<std::int64_t>(report.findings.size()));
  for (const auto& finding : report.findings) {
    EXPECT_EQ(finding.detail, "std::out_of_range: stoi");
  }
}

TEST(FuzzTest, AnAllocationPastTheMemoryLimitFailsInsteadOfTakingTheMachine) {
  const Report report = run(digits([](const std::string& input) {
                              if (input != "4567") return;
                              std::string huge(std::size_t{8} << 30, 'x');  // 8 GiB
                              if (huge.back() != 'x') std::abort();
                            }),
                            inputs(10));
  ASSERT_EQ(report.findings.size(), 1u) << report.describeFindings();
  EXPECT_EQ(report.findings[0].detail, "std::bad_alloc: std::bad_alloc");
}

TEST(FuzzTest, RunEachOnceWantsTheExpectedMessage) {
  const auto refuse = [](const std::string& input) { throw ConfigError("refused: " + input); };
  const Report report = runEachOnce("each_once", {"a", "b"}, refuse, "refused: a", 1 << 30);
  EXPECT_EQ(report.inputs, 2);
  EXPECT_EQ(report.rejected, 1);
  ASSERT_EQ(report.findings.size(), 1u);
  EXPECT_EQ(report.findings[0].detail,
            "std::logic_error: a PermanentError without \"refused: a\": refused: b");
}

TEST(FuzzTest, EscapeShowsEveryByte) {
  EXPECT_EQ(escape(std::string("a\0b\n\"\xff", 6)), "a\\x00\"\"b\\n\\\"\\xff");
  EXPECT_EQ(escape("abcdef", 3), "abc...(6 bytes)");
}

}  // namespace
}  // namespace ddp::testing::fuzz
