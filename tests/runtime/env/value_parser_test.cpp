// parseInteger: the one integer parser of variables, flags and ddptrain options, and the
// `found` text each kind of bad input gets.
#include "runtime/env/value_parser.h"

#include <gtest/gtest.h>

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

TEST(DescribeBadValueTest, OneShapeForSetAndUnset) {
  EXPECT_EQ(describeBadValue("--nnodes", "x", integerExpectation(1, 4), "'x'", "Fix it."),
            "--nnodes=x: expected a decimal integer in [1, 4]; found 'x'. Fix it.");
  EXPECT_EQ(describeBadValue("MASTER_ADDR", std::nullopt, "a host", "nothing", ""),
            "MASTER_ADDR (unset): expected a host; found nothing.");
}

}  // namespace
}  // namespace ddp::env
