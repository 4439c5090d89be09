#include "data/idx_reader.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include <torch/torch.h>

#include "tests/support/fuzz.h"

namespace ddp::data {
namespace {

namespace fs = std::filesystem;

class IdxReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("idx_reader_test_" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::vector<std::uint8_t>& bytes,
                    bool gzip = false) {
    auto path = (dir_ / name).string();
    if (gzip) {
      gzFile f = gzopen(path.c_str(), "wb");
      gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
      gzclose(f);
    } else {
      std::ofstream(path, std::ios::binary)
          .write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    }
    return path;
  }

  // IDX header: 0, 0, type 0x08, ndims, then each dim big-endian.
  static std::vector<std::uint8_t> header(std::vector<std::uint32_t> dims) {
    std::vector<std::uint8_t> bytes{0, 0, 0x08, static_cast<std::uint8_t>(dims.size())};
    for (auto d : dims) {
      for (int shift : {24, 16, 8, 0}) bytes.push_back((d >> shift) & 0xff);
    }
    return bytes;
  }

  fs::path dir_;
};

TEST_F(IdxReaderTest, ReadsPlainAndGzipAlike) {
  auto bytes = header({2, 2, 3});
  for (int i = 0; i < 12; ++i) bytes.push_back(static_cast<std::uint8_t>(i * 20));
  for (bool gzip : {false, true}) {
    auto array = readIdxFile(write(gzip ? "a.gz" : "a", bytes, gzip));
    EXPECT_EQ(array.dims, (std::vector<std::int64_t>{2, 2, 3}));
    EXPECT_TRUE(torch::equal(
        array.values, (torch::arange(12, torch::kInt32) * 20).to(torch::kUInt8).view({2, 2, 3})));
  }
}

// Each malformed file: the error names the file and says what was expected and found.
void expectDataError(const std::string& path, const std::string& substring) {
  try {
    readIdxFile(path);
    ADD_FAILURE() << path << ": no error";
  } catch (const DataError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(substring), std::string::npos) << message;
  }
}

TEST_F(IdxReaderTest, MalformedFilesGetClearErrors) {
  expectDataError(write("empty", {}), "expected a 4-byte IDX magic number, found 0 bytes");
  expectDataError(write("magic", {0x12, 0x34, 0x08, 0x03, 0, 0, 0, 1}),
                  "offset 0: expected an IDX magic number 0x000008NN");
  // gzip's magic followed by garbage: a corrupt .gz, said as such.
  expectDataError(write("corrupt.gz", {0x1f, 0x8b, 0x08, 0x03, 0, 0, 0, 1, 9, 9, 9, 9}),
                  "cannot decompress");
  expectDataError(write("float", {0, 0, 0x0d, 0x01, 0, 0, 0, 1}), "found 0x00000d01");
  expectDataError(write("zero_dims", {0, 0, 0x08, 0x00}), "found 0x00000800");
  auto shortHeader = header({5, 5});
  shortHeader.resize(9);
  expectDataError(write("short_header", shortHeader),
                  "offset 8: expected the size of dimension 1 of 2");
  // A header that claims 60000x28x28 with 10 bytes behind it: truncation, no allocation.
  auto lying = header({60000, 28, 28});
  lying.insert(lying.end(), 10, 7);
  expectDataError(write("lying.gz", lying, true),
                  "declares 47040000 values (60000x28x28), but the data ends after 10");
  expectDataError(write("huge", header({1u << 30, 1u << 30})), "more than 2^40 values");
  // 2^40 values after two dimensions, then x 2^30: the product wrapped to 0 and passed the
  // check, and torch::empty threw its own c10::Error (found by idx_reader_fuzz_test.cpp).
  expectDataError(write("wrapping", header({1u << 30, 1u << 10, 1u << 30})),
                  "more than 2^40 values");
  expectDataError(write("zero", header({0})), "dimension 0 has size 0");
  expectDataError((dir_ / "missing").string(), "cannot open");
}

TEST_F(IdxReaderTest, SplitChecksImagesAgainstLabels) {
  auto images = header({3, 2, 2});
  images.insert(images.end(), 12, 255);
  auto labels = header({2});
  labels.insert(labels.end(), {1, 2});
  write("train-images-idx3-ubyte", images);
  write("train-labels-idx1-ubyte.gz", labels, true);
  try {
    readMnistSplit(dir_.string(), "train");
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("expected 3 labels"), std::string::npos) << e.what();
  }
  try {
    readMnistSplit(dir_.string(), "t10k");
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("t10k-images-idx3-ubyte.gz"), std::string::npos);
  }
}

// --data-dir is checked for being a directory: a file there once read as a directory
// that held no MNIST files ("neither ... exists"), and a FIFO among the files was opened
// and waited on forever (GzFile, see gz_file_test.cpp).
TEST_F(IdxReaderTest, SplitNeedsADirectoryOfRegularFiles) {
  const auto file = write("not-a-dir", header({1}));
  try {
    readMnistSplit(file, "train");
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()),
              file +
                  ": expected a directory holding train-images-idx3-ubyte[.gz] and "
                  "train-labels-idx1-ubyte[.gz], found a regular file. HINT: --data-dir must hold "
                  "the four MNIST-format files "
                  "(Fashion-MNIST: apt-get install dataset-fashion-mnist -> "
                  "/usr/share/datasets/fashion-mnist).");
  }
  const auto fifo = (dir_ / "train-images-idx3-ubyte").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  write("train-labels-idx1-ubyte", header({1}));
  try {
    readMnistSplit(dir_.string(), "train");
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(fifo + ": expected a regular file (plain or gzip), "
                                                "found a FIFO (named pipe)"),
              std::string::npos)
        << e.what();
  }
}

// A header that claims 2^26 values and a .gz that holds them all as zeros (64 KiB on disk):
// when they do not fit in memory, the reader says so instead of std::bad_alloc or c10's
// "can't allocate memory". Read in a child under a 32 MiB limit (tests/support/fuzz.h).
TEST_F(IdxReaderTest, ValuesThatDoNotFitInMemoryAreADataError) {
  auto bytes = header({1u << 20, 64});
  bytes.resize(bytes.size() + (std::size_t{1} << 26), 0);
  const auto path = write("bomb.gz", bytes, /*gzip=*/true);
  const auto report = ddp::testing::fuzz::runEachOnce(
      "idx_bomb", {path}, [](const std::string& file) { readIdxFile(file); },
      "do not fit in this process's memory", std::size_t{32} << 20);
  EXPECT_EQ(report.rejected, 1) << report.describeFindings();
}

TEST(FashionMnistTest, RealFilesHaveTheKnownShape) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << dir << " missing (dataset-fashion-mnist)";
  auto train = readMnistSplit(dir, "train");
  auto test = readMnistSplit(dir, "t10k");
  EXPECT_EQ(train.images.sizes(), (std::vector<std::int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(test.images.sizes(), (std::vector<std::int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(train.labels.sizes(), (std::vector<std::int64_t>{60000}));
  EXPECT_GE(train.images.min().item<float>(), 0.0f);
  EXPECT_LE(train.images.max().item<float>(), 1.0f);
  // Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
  EXPECT_TRUE(torch::equal(torch::bincount(train.labels), torch::full({10}, 6000, torch::kInt64)));
  EXPECT_TRUE(torch::equal(torch::bincount(test.labels), torch::full({10}, 1000, torch::kInt64)));
}

}  // namespace
}  // namespace ddp::data
