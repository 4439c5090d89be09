// The IDX reader under random files (tests/support/fuzz.h): every file is read or is a
// DataError, never a crash, a hang or an exception of another type, and a header is never
// believed beyond the data that backs it.
#include "data/idx_reader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <stdexcept>

#include "tests/data/data_test_files.h"
#include "tests/support/fuzz.h"

namespace ddp::data {
namespace {

namespace fuzz = ddp::testing::fuzz;

std::string bigEndian(std::uint32_t value) {
  return {static_cast<char>(value >> 24), static_cast<char>(value >> 16),
          static_cast<char>(value >> 8), static_cast<char>(value)};
}

// A header field (the type, the dimension count, or one dimension's size) set to a value
// at or past a limit.
void mutateHeader(std::string& s, fuzz::Rng& rng) {
  static const std::uint32_t kSizes[] = {
      0, 1, 2, 3, 1024, 1u << 20, (1u << 30) - 1, 1u << 30, (1u << 30) + 1, 1u << 31, 0xffffffffu};
  static const char kCounts[] = {0, 1, 2, 3, 8, 9, 127, static_cast<char>(255)};
  if (s.size() < 4) s.resize(4, '\0');
  switch (rng() % 3) {
    case 0:
      s[3] = kCounts[rng() % std::size(kCounts)];
      break;
    case 1:
      s[2] = static_cast<char>(rng() % 2 == 0 ? 0x08 : rng());
      break;
    default: {
      const std::size_t field = 4 + 4 * (rng() % 4);
      if (s.size() < field + 4) s.resize(field + 4, '\0');
      s.replace(field, 4, bigEndian(kSizes[rng() % std::size(kSizes)]));
    }
  }
}

TEST(IdxReaderFuzzTest, EveryFileIsReadOrIsADataError) {
  const testing::TempDir dir("idx_reader_fuzz_test");
  const std::string images = std::string("\0\0\x08\x03", 4) + bigEndian(3) + bigEndian(2) +
                             bigEndian(2) + std::string("\x00\x7f\xff\x01\x02\x03", 6) +
                             std::string(6, '\x10');
  const std::string labels = std::string("\0\0\x08\x01", 4) + bigEndian(3) + "\x01\x09\x00";
  fuzz::Target target{"idx", {images, labels, testing::gzipped(images), testing::gzipped(labels)}};
  target.mutators = {mutateHeader, mutateHeader,
                     [](std::string& s, fuzz::Rng&) { s = testing::gzipped(s); }};
  target.parse = [&dir](const std::string& input) {
    const auto array = readIdxFile(fuzz::writeInputFile(dir.path(""), "input", input));
    std::int64_t count = 1;
    for (const auto size : array.dims) count *= size;
    if (array.values.numel() != count || array.values.sizes().vec() != array.dims) {
      throw std::logic_error("the values do not have the shape of the header");
    }
  };
  fuzz::runAndExpectNoFindings(target, 6000);
}

}  // namespace
}  // namespace ddp::data
