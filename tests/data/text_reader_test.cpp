#include "data/text_reader.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>

#include <torch/torch.h>

#include "tests/data/data_test_files.h"

namespace ddp::data {
namespace {

using testing::expectDataError;
using testing::kOpticksText;
using testing::TempDir;

std::string fileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST(OpticksTextTest, EveryByteBecomesOneTokenOfASortedVocabulary) {
  DDPRUN_SKIP_UNLESS_EXISTS(kOpticksText, "golang-github-andybalholm-brotli-dev");
  const auto bytes = fileBytes(kOpticksText);
  ASSERT_GT(bytes.size(), 500'000u);  // a real book, not a stub
  const auto text = readCharText(kOpticksText);
  EXPECT_EQ(text.tokens.size(0), static_cast<std::int64_t>(bytes.size()));
  const std::set<std::uint8_t> distinct(bytes.begin(), bytes.end());
  EXPECT_EQ(text.vocabulary, std::vector<std::uint8_t>(distinct.begin(), distinct.end()));
  EXPECT_EQ(decodeTokens(text.vocabulary, text.tokens), bytes);
  EXPECT_GE(text.tokens.min().item<std::int64_t>(), 0);
  EXPECT_EQ(text.tokens.max().item<std::int64_t>(),
            static_cast<std::int64_t>(text.vocabulary.size()) - 1);

  // Non-overlapping windows of 65 from the first 80% and the last 20%.
  const auto splits = splitCharText(text, 64, 0.2);
  const auto length = static_cast<std::int64_t>(bytes.size());
  EXPECT_EQ(splits.trainBytes, static_cast<std::int64_t>(0.8 * static_cast<double>(length)));
  EXPECT_EQ(splits.trainBytes + splits.testBytes, length);
  EXPECT_EQ(splits.train.inputs.sizes(), (std::vector<std::int64_t>{splits.trainBytes / 65, 64}));
  EXPECT_EQ(splits.test.targets.sizes(), (std::vector<std::int64_t>{splits.testBytes / 65, 64}));
  // The third test window starts 2 * 65 bytes into the test text.
  EXPECT_EQ(decodeTokens(text.vocabulary, splits.test.inputs[2]),
            bytes.substr(static_cast<std::size_t>(splits.trainBytes + 130), 64));
}

TEST(CharWindowsTest, TargetsAreTheInputsShiftedByOne) {
  const auto tokens = torch::arange(23, torch::kInt64);  // 4 windows of 5, 3 tokens left over
  const auto windows = cutWindows(tokens, 4);
  EXPECT_TRUE(torch::equal(
      windows.inputs,
      torch::tensor({0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 16, 17, 18}, torch::kInt64)
          .view({4, 4})));
  EXPECT_TRUE(torch::equal(windows.targets, windows.inputs + 1));
  EXPECT_EQ(cutWindows(tokens.narrow(0, 0, 4), 4).inputs.size(0), 0);
}

class TextReaderTest : public ::testing::Test {
 protected:
  TempDir dir_{"text_reader_test"};
};

// ddptrain takes any blockSize >= 1 and any testFraction in (0, 1). Found by
// text_reader_fuzz_test.cpp: blockSize + 1 wrapped for INT64_MAX (SIGSEGV in reshape), and
// the search for the shortest text that would do never ended where a split's share of a
// byte rounds away ((1 - 1e-17) == 1 in double) or the answer passes 2^63.
TEST_F(TextReaderTest, EdgeBlockSizesAndFractionsAreDataErrors) {
  const auto path = dir_.write("short.txt", std::string(229, 'x'));
  const auto text = readCharText(path);
  const std::string beyond = "so the text needs more than 2^53 bytes";
  expectDataError([&] { splitCharText(text, std::numeric_limits<std::int64_t>::max(), 0.2); },
                  {path, "229 bytes of text split into 183 to train on and 46 to test", beyond,
                   "blockSize + 1 = 9223372036854775808 bytes"});
  expectDataError([&] { splitCharText(text, std::int64_t{1} << 53, 0.999999); }, {beyond});
  expectDataError([&] { splitCharText(text, 64, 1e-17); }, {beyond});
  expectDataError([&] { splitCharText(text, 64, 4.9e-324); }, {beyond});
  // Where the answer is in reach it is exact: 64 / 1e-6 bytes and one more.
  expectDataError([&] { splitCharText(text, 64, 1e-6); },
                  {"so the text needs at least 64000001 bytes"});
}

TEST_F(TextReaderTest, VocabularyDependsOnTheBytesPresentOnly) {
  // Same bytes in another order (and gzip-compressed): the same vocabulary.
  const auto a = readCharText(dir_.write("a.txt", "hello, world"));
  const auto b = readCharText(dir_.write("b.txt.gz", "world hello,", /*gzip=*/true));
  EXPECT_EQ(a.vocabulary, b.vocabulary);
  EXPECT_EQ(a.vocabulary, (std::vector<std::uint8_t>{' ', ',', 'd', 'e', 'h', 'l', 'o', 'r', 'w'}));
  // 'h' is token 4, 'e' 3, 'l' 5.
  EXPECT_TRUE(torch::equal(a.tokens.narrow(0, 0, 3), torch::tensor({4, 3, 5}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(readCharText(dir_.path("a.txt")).tokens, a.tokens));
}

TEST_F(TextReaderTest, ShortOrEmptyTextsSayWhatTheyNeed) {
  auto path = dir_.write("empty.txt", "");
  expectDataError([&] { readCharText(path); }, {path, "empty file, expected text"});

  path = dir_.write("short.txt", std::string(100, 'x'));
  const auto text = readCharText(path);
  // 80 + 20 bytes; each split needs 65. The shortest text that works: 321 bytes
  // (floor(0.8 * 321) = 256 to train, 65 to test).
  expectDataError([&] { splitCharText(text, 64, 0.2); },
                  {path, "100 bytes of text split into 80 to train on and 20 to test",
                   "blockSize + 1 = 65 bytes", "the text needs at least 321 bytes"});
  const auto enough = readCharText(dir_.write("ok.txt", std::string(321, 'x')));
  EXPECT_NO_THROW(splitCharText(enough, 64, 0.2));
  const auto oneShort = readCharText(dir_.write("320.txt", std::string(320, 'x')));
  expectDataError([&] { splitCharText(oneShort, 64, 0.2); }, {"at least 321 bytes"});
  expectDataError([&] { splitCharText(text, 0, 0.2); }, {"blockSize must be >= 1, found 0"});
  expectDataError([&] { splitCharText(text, 4, 1.0); },
                  {"testFraction must be in (0, 1), found 1"});
  expectDataError([&] { readCharText(dir_.path("")); },
                  {"expected a regular file (plain or gzip), found a directory"});
}

}  // namespace
}  // namespace ddp::data
