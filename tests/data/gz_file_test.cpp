// GzFile opens what every reader in data/ reads: regular files only, checked on the open
// file before a byte is read. A FIFO once waited for a writer forever, /dev/zero was read
// until memory ran out, and a directory failed with "is a directory" only in one reader.
#include "data/gz_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "tests/data/data_test_files.h"
#include "tests/support/fuzz.h"

namespace ddp::data {
namespace {

using testing::expectDataError;
using testing::TempDir;
namespace fuzz = ddp::testing::fuzz;

TEST(GzFileTest, OpensRegularFilesOnly) {
  const TempDir dir("gz_file_test");
  const std::string fifo = dir.path("fifo.csv");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string hint = " Pass the path of the data file itself.";
  expectDataError(
      [&] { readWholeFile(fifo); },
      {fifo + ": expected a regular file (plain or gzip), found a FIFO (named pipe)." + hint});
  expectDataError(
      [&] { readWholeFile("/dev/zero"); },
      {"/dev/zero: expected a regular file (plain or gzip), found a character device." + hint});
  expectDataError([&] { GzFile file(dir.path(""), "check --data-dir"); },
                  {"expected a regular file (plain or gzip), found a directory." + hint +
                   " HINT: check --data-dir"});
  expectDataError([&] { readWholeFile(dir.path("missing")); },
                  {dir.path("missing") + ": cannot open (No such file or directory)."});
  EXPECT_EQ(readWholeFile(dir.write("a.gz", "plain text", /*gzip=*/true)), "plain text");
  EXPECT_EQ(readWholeFile(dir.write("a.txt", "plain text")), "plain text");
}

// A .gz file may decompress to far more than its size (64 MiB of zeros are 64 KiB): when
// the content does not fit in memory, the reader says so instead of std::bad_alloc. Read
// in a child under a 32 MiB limit (tests/support/fuzz.h runs it and judges the exception).
TEST(GzFileTest, ContentThatDoesNotFitInMemoryIsADataError) {
  const TempDir dir("gz_file_test");
  const std::string path = dir.path("bomb.gz");
  gzFile out = gzopen(path.c_str(), "wb");
  const std::string zeros(1 << 20, '\0');
  for (int i = 0; i < 64; ++i) gzwrite(out, zeros.data(), static_cast<unsigned>(zeros.size()));
  gzclose(out);
  const auto report = fuzz::runEachOnce(
      "gzip_bomb", {path}, [](const std::string& file) { readWholeFile(file); },
      "does not fit in this process's memory", std::size_t{32} << 20);
  EXPECT_EQ(report.rejected, 1) << report.describeFindings();
}

}  // namespace
}  // namespace ddp::data
