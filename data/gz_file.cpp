#include "data/gz_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <new>

#include <fmt/format.h>

#include "data/data_error.h"
#include "runtime/env/value_parser.h"

namespace ddp::data {
namespace {

// Read in bounded chunks, so memory follows the bytes that really arrive.
constexpr std::size_t kChunkBytes = 1 << 20;

}  // namespace

void GzFile::Closer::operator()(gzFile_s* file) const { gzclose(file); }

GzFile::GzFile(std::string path, const std::string& hint) : path_(std::move(path)) {
  const std::string hintText = hint.empty() ? "" : " HINT: " + hint;
  // The type is checked on the open file, before a byte is read: opened without
  // O_NONBLOCK, a FIFO would wait for a writer forever; /dev/zero never ends.
  const int fd = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw DataError(fmt::format("{}: cannot open ({}).{}", path_, std::strerror(errno), hintText));
  }
  struct stat status {};
  if (::fstat(fd, &status) != 0 || !S_ISREG(status.st_mode)) {
    ::close(fd);
    throw DataError(fmt::format(
        "{}: expected a regular file (plain or gzip), found {}. Pass the path of the data file "
        "itself.{}",
        path_, env::describeFileType(status.st_mode), hintText));
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  file_.reset(gzdopen(fd, "rb"));
  if (!file_) {
    ::close(fd);
    throw DataError(fmt::format("{}: cannot open ({}).{}", path_, std::strerror(errno), hintText));
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
  GzFile file(path);
  std::string content;
  try {
    for (;;) {
      const std::size_t old = content.size();
      content.resize(old + kChunkBytes);
      const std::size_t n =
          file.read(content.data() + old, kChunkBytes, static_cast<std::int64_t>(old));
      content.resize(old + n);
      if (n == 0) return content;
    }
  } catch (const std::bad_alloc&) {
    // A .gz may decompress to far more than its size on disk.
    throw DataError(fmt::format(
        "{}: offset {}: the content does not fit in this process's memory ({} MiB read). "
        "Expected a file that fits: use a smaller one (a .gz may decompress to far more than "
        "its size), or give the process more memory.",
        path, content.size(), content.size() >> 20));
  }
}

}  // namespace ddp::data
