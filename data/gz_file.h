// Reading files that may be gzip-compressed: zlib's gzopen reads a .gz file and a plain
// file alike, so every reader in data/ accepts both without looking at the name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

struct gzFile_s;

namespace ddp::data {

class GzFile {
 public:
  // Opens `path` for reading: a regular file only (a FIFO, a directory or a device is a
  // DataError before anything is read). Throws DataError naming the file and the system's
  // reason; `hint` (e.g. where such files come from) is appended when it is not empty.
  explicit GzFile(std::string path, const std::string& hint = "");

  // Reads up to `size` bytes into `out`; fewer means the file ended. A decompression
  // error (a corrupt .gz) throws DataError, reported at byte `offset` of the content.
  std::size_t read(void* out, std::size_t size, std::int64_t offset);

  const std::string& path() const { return path_; }

 private:
  struct Closer {
    void operator()(gzFile_s* file) const;
  };
  std::string path_;
  std::unique_ptr<gzFile_s, Closer> file_;
};

// The whole (decompressed) content of a file. Memory grows with the data actually
// read, in bounded chunks; `path` must be a regular file (see GzFile).
std::string readWholeFile(const std::string& path);

}  // namespace ddp::data
