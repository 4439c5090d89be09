#include "data/text_reader.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>

#include <fmt/format.h>
#include <torch/torch.h>

#include "data/gz_file.h"

namespace ddp::data {

CharText readCharText(const std::string& path) {
  const std::string text = readWholeFile(path);
  if (text.empty()) {
    throw DataError(
        fmt::format("{}: empty file, expected text (any bytes) for a char-level "
                    "model",
                    path));
  }
  std::array<bool, 256> present{};
  for (const char c : text) present[static_cast<std::uint8_t>(c)] = true;
  CharText result;
  result.path = path;
  std::array<std::int64_t, 256> tokenOf{};
  for (int byte = 0; byte < 256; ++byte) {
    if (!present[byte]) continue;
    tokenOf[byte] = static_cast<std::int64_t>(result.vocabulary.size());
    result.vocabulary.push_back(static_cast<std::uint8_t>(byte));
  }
  result.tokens = torch::empty({static_cast<std::int64_t>(text.size())}, torch::kInt64);
  auto* tokens = result.tokens.data_ptr<std::int64_t>();
  for (std::size_t i = 0; i < text.size(); ++i) {
    tokens[i] = tokenOf[static_cast<std::uint8_t>(text[i])];
  }
  return result;
}

CharWindows cutWindows(const torch::Tensor& tokens, std::int64_t blockSize) {
  TORCH_CHECK(blockSize >= 1, "cutWindows: blockSize must be >= 1, found ", blockSize);
  TORCH_CHECK(tokens.dim() == 1, "cutWindows: expected tokens [L], found ", tokens.sizes());
  const std::int64_t window = blockSize + 1;
  const std::int64_t count = tokens.size(0) / window;
  // [count * window] -> [count, window]; inputs and targets overlap in all but one token.
  const auto windows = tokens.narrow(0, 0, count * window).reshape({count, window});
  return {windows.narrow(1, 0, blockSize).contiguous(),
          windows.narrow(1, 1, blockSize).contiguous()};
}

namespace {

// The train text's length for a text of `length` bytes (Note [Character windows]).
std::int64_t trainLength(std::int64_t length, double testFraction) {
  return static_cast<std::int64_t>(std::floor((1 - testFraction) * static_cast<double>(length)));
}

// Whether both splits of a text of `length` bytes hold a window of blockSize + 1 bytes
// (written without forming blockSize + 1, which wraps for INT64_MAX).
bool holdsWindows(std::int64_t length, std::int64_t blockSize, double testFraction) {
  const std::int64_t train = trainLength(length, testFraction);
  return train > blockSize && length - train > blockSize;
}

// Past this the splits' arithmetic in double is no longer exact, and no file is that long.
constexpr std::int64_t kMaxTextBytes = std::int64_t{1} << 53;
// How far past its estimate the shortest length is looked for, one byte at a time.
constexpr std::int64_t kMaxSearchSteps = 1 << 20;

// The shortest text whose splits both hold a window, for the hint (or, where rounding
// keeps the search from reaching it, a length it is at least); nullopt when it is longer
// than kMaxTextBytes (a huge blockSize, or a testFraction so near 0 or 1 that a split's
// share of a byte rounds away: (1 - 1e-17) == 1 in double).
std::optional<std::int64_t> shortestText(std::int64_t blockSize, double testFraction) {
  // The smaller split, about share * length bytes, must exceed blockSize: count up from
  // there (both splits grow with the text).
  const double share = std::min(testFraction, 1 - testFraction);
  const double estimate = static_cast<double>(blockSize) / share;
  if (!(estimate < static_cast<double>(kMaxTextBytes))) return std::nullopt;
  const auto first = static_cast<std::int64_t>(estimate);
  for (std::int64_t length = first; length < first + kMaxSearchSteps; ++length) {
    if (holdsWindows(length, blockSize, testFraction)) return length;
  }
  return first + kMaxSearchSteps;
}

}  // namespace

CharSplits splitCharText(const CharText& text, std::int64_t blockSize, double testFraction) {
  if (blockSize < 1) {
    throw DataError(fmt::format("{}: blockSize must be >= 1, found {}", text.path, blockSize));
  }
  if (!(testFraction > 0 && testFraction < 1)) {
    throw DataError(
        fmt::format("{}: testFraction must be in (0, 1), found {}", text.path, testFraction));
  }
  const std::int64_t length = text.tokens.size(0);
  CharSplits splits;
  splits.trainBytes = trainLength(length, testFraction);
  splits.testBytes = length - splits.trainBytes;
  if (!holdsWindows(length, blockSize, testFraction)) {
    const auto needed = shortestText(blockSize, testFraction);
    throw DataError(fmt::format(
        "{}: {} bytes of text split into {} to train on and {} to test (testFraction {}); each "
        "split needs at least one window of blockSize + 1 = {} bytes, so the text needs {}. "
        "HINT: use a longer text{}",
        text.path, length, splits.trainBytes, splits.testBytes, testFraction,
        static_cast<std::uint64_t>(blockSize) + 1,
        needed ? fmt::format("at least {} bytes", *needed) : std::string("more than 2^53 bytes"),
        needed ? " or a smaller blockSize" : ", a smaller blockSize or a testFraction nearer 0.5"));
  }
  // Both splits hold a window, so blockSize + 1 <= length: no overflow from here on.
  splits.train = cutWindows(text.tokens.narrow(0, 0, splits.trainBytes), blockSize);
  splits.test = cutWindows(text.tokens.narrow(0, splits.trainBytes, splits.testBytes), blockSize);
  return splits;
}

std::string decodeTokens(const std::vector<std::uint8_t>& vocabulary, const torch::Tensor& tokens) {
  const auto flat = tokens.reshape({-1}).to(torch::kInt64).contiguous();
  std::string text;
  text.reserve(static_cast<std::size_t>(flat.numel()));
  const auto* ids = flat.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < flat.numel(); ++i) {
    TORCH_CHECK(ids[i] >= 0 && ids[i] < static_cast<std::int64_t>(vocabulary.size()),
                "decodeTokens: token ", ids[i], " outside the vocabulary of ", vocabulary.size());
    text.push_back(static_cast<char>(vocabulary[static_cast<std::size_t>(ids[i])]));
  }
  return text;
}

}  // namespace ddp::data
