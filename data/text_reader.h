// Reader for plain text as characters (bytes), the input of the char-level gpt model.
//
// Note [Character windows]
// The vocabulary is the sorted set of distinct bytes of the whole file, so it depends on
// the file alone (every rank, every run, the same token ids); a token is a byte's index in
// it. The first (1 - testFraction) of the bytes are the train text, the rest the test
// text. Each is cut into non-overlapping windows of blockSize + 1 tokens, the tail that
// does not fill a window dropped; a window gives one sample:
//   inputs  = window[0 .. blockSize)      int64 [blockSize]
//   targets = window[1 .. blockSize]      int64 [blockSize], the next character of each input
// Bytes, not Unicode characters: a UTF-8 letter outside ASCII is two or three tokens,
// which keeps the vocabulary small and every file readable.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "data/data_error.h"

namespace ddp::data {

struct CharText {
  std::string path;                      // where it was read from, for messages
  std::vector<std::uint8_t> vocabulary;  // sorted distinct bytes; token id = index
  torch::Tensor tokens;                  // int64 [L]: the file, one token per byte
};

// Reads a text file, plain or gzip. Throws DataError for a file that cannot be read or
// is empty.
CharText readCharText(const std::string& path);

struct CharWindows {
  torch::Tensor inputs;   // int64 [N, blockSize]
  torch::Tensor targets;  // int64 [N, blockSize], inputs shifted by one
};

// Cuts tokens [L] into N = L / (blockSize + 1) windows (Note [Character windows]).
// N may be 0; blockSize must be >= 1.
CharWindows cutWindows(const torch::Tensor& tokens, std::int64_t blockSize);

struct CharSplits {
  CharWindows train;  // from the first trainBytes of the text
  CharWindows test;   // from the last testBytes
  std::int64_t trainBytes = 0;
  std::int64_t testBytes = 0;
};

// Splits the text and cuts both parts into windows (Note [Character windows]). Throws
// DataError when blockSize < 1, testFraction is outside (0, 1), or a split is shorter
// than one window (saying how long the text is and how long it would need to be).
CharSplits splitCharText(const CharText& text, std::int64_t blockSize, double testFraction);

// Token ids back to the bytes they stand for (for printing samples).
std::string decodeTokens(const std::vector<std::uint8_t>& vocabulary, const torch::Tensor& tokens);

}  // namespace ddp::data
