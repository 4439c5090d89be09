// What the data/ tests share: a temporary directory to write files into (plain or gzip),
// the real data files Debian ships (scripts/setup.sh installs the packages), and a
// check that a call fails with a DataError saying what it should.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "data/data_error.h"

namespace ddp::data::testing {

// Debian's python3-sklearn: iris.csv, wine_data.csv, breast_cancer.csv, digits.csv.gz.
inline const std::string kSklearnDataDir = "/usr/lib/python3/dist-packages/sklearn/datasets/data";
// Debian's golang-github-andybalholm-brotli-dev: Newton's Opticks from Project Gutenberg.
inline const std::string kOpticksText =
    "/usr/share/gocode/src/github.com/andybalholm/brotli/testdata/Isaac.Newton-Opticks.txt";
// Debian's dataset-fashion-mnist.
inline const std::string kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

#define DDPRUN_SKIP_UNLESS_EXISTS(path, package) \
  if (!std::filesystem::exists(path))            \
  GTEST_SKIP() << (path) << " missing: apt-get install " << (package) << " (scripts/setup.sh)"

class TempDir {
 public:
  explicit TempDir(const std::string& prefix)
      : path_(std::filesystem::temp_directory_path() /
              (prefix + "_" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Writes `content` to `name` in the directory, gzip-compressed if asked; returns the path.
  std::string write(const std::string& name, const std::string& content, bool gzip = false) const {
    const auto path = (path_ / name).string();
    if (gzip) {
      gzFile file = gzopen(path.c_str(), "wb");
      gzwrite(file, content.data(), static_cast<unsigned>(content.size()));
      gzclose(file);
    } else {
      std::ofstream(path, std::ios::binary).write(content.data(), content.size());
    }
    return path;
  }

  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// `content` as a gzip file's bytes (what TempDir::write(..., true) writes), for corpora.
inline std::string gzipped(const std::string& content) {
  z_stream stream{};
  deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&stream, content.size()), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(content.data()));
  stream.avail_in = static_cast<uInt>(content.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

// The message of the DataError that `call` throws, every one of `expected` in it.
template <typename Call>
void expectDataError(Call&& call, std::initializer_list<std::string> expected) {
  try {
    call();
    ADD_FAILURE() << "no DataError; expected one saying: " << *expected.begin();
  } catch (const DataError& e) {
    const std::string message = e.what();
    for (const auto& part : expected) {
      EXPECT_NE(message.find(part), std::string::npos)
          << "expected \"" << part << "\" in: " << message;
    }
  }
}

}  // namespace ddp::data::testing
