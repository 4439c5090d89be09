#include "data/gz_file.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "data/data_error.h"

namespace ddp::data {
namespace {

// Read in bounded chunks, so memory follows the bytes that really arrive.
constexpr std::size_t kChunkBytes = 1 << 20;

}  // namespace

void GzFile::Closer::operator()(gzFile_s* file) const { gzclose(file); }

GzFile::GzFile(std::string path, const std::string& hint) : path_(std::move(path)) {
  file_.reset(gzopen(path_.c_str(), "rb"));
  if (!file_) {
    throw DataError(fmt::format("{}: cannot open ({}).{}{}", path_, std::strerror(errno),
                                hint.empty() ? "" : " HINT: ", hint));
  }
}

std::size_t GzFile::read(void* out, std::size_t size, std::int64_t offset) {
  const int n = gzread(file_.get(), out, static_cast<unsigned>(size));
  int code = Z_OK;
  const char* message = gzerror(file_.get(), &code);
  if (n < 0) {
    throw DataError(fmt::format("{}: offset {}: cannot decompress ({}). Is it a valid .gz file?",
                                path_, offset, message));
  }
  // A .gz cut short reads as a short file unless asked: zlib only notes it (Z_BUF_ERROR).
  if (code == Z_BUF_ERROR) {
    throw DataError(
        fmt::format("{}: offset {}: cannot decompress further ({}): the .gz file "
                    "is truncated",
                    path_, offset + n, message));
  }
  return static_cast<std::size_t>(n);
}

std::string readWholeFile(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    throw DataError(fmt::format("{}: is a directory, expected a file", path));
  }
  GzFile file(path);
  std::string content;
  for (;;) {
    const std::size_t old = content.size();
    content.resize(old + kChunkBytes);
    const std::size_t n =
        file.read(content.data() + old, kChunkBytes, static_cast<std::int64_t>(old));
    content.resize(old + n);
    if (n == 0) return content;
  }
}

}  // namespace ddp::data
