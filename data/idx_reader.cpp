#include "data/idx_reader.h"

#include <filesystem>
#include <memory>
#include <new>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "data/gz_file.h"
#include "runtime/env/value_parser.h"

namespace ddp::data {
namespace {

constexpr std::uint8_t kTypeUnsignedByte = 0x08;
// No MNIST-like file has more than a few dims; anything beyond is a corrupt header.
constexpr int kMaxDims = 8;
// Read in bounded chunks so a header's claim is only believed as far as data arrives.
constexpr std::size_t kChunkBytes = 1 << 20;
// No IDX file holds more values (1 TiB of bytes): a header that claims more is corrupt.
constexpr std::int64_t kMaxValues = std::int64_t{1} << 40;

std::string hex(std::uint32_t value) { return fmt::format("0x{:08x}", value); }

// The `count` values after the header, in chunks: memory follows the bytes that arrive,
// never the header's claim.
void readValues(GzFile& file, const std::string& path, const std::vector<std::int64_t>& dims,
                std::int64_t count, std::int64_t dataOffset, std::vector<std::uint8_t>& values) {
  while (static_cast<std::int64_t>(values.size()) < count) {
    const std::size_t want =
        std::min<std::size_t>(kChunkBytes, static_cast<std::size_t>(count) - values.size());
    const std::size_t old = values.size();
    values.resize(old + want);
    const auto n =
        file.read(values.data() + old, want, dataOffset + static_cast<std::int64_t>(old));
    values.resize(old + n);
    if (n == 0) {
      throw DataError(fmt::format(
          "{}: the header declares {} values ({}), but the data ends after {} of them at "
          "offset {} (truncated file, or a header larger than the file)",
          path, count, fmt::join(dims, "x"), values.size(), dataOffset + values.size()));
    }
  }
}

}  // namespace

IdxArray readIdxFile(const std::string& path) {
  GzFile file(path,
              "check --data-dir; the Fashion-MNIST files come with Debian's "
              "dataset-fashion-mnist.");
  std::uint8_t header[4];
  const auto got = file.read(header, 4, 0);
  if (got != 4) {
    throw DataError(
        fmt::format("{}: offset 0: expected a 4-byte IDX magic number, found {} "
                    "bytes (truncated or empty file)",
                    path, got));
  }
  const std::uint32_t magic = (header[0] << 24) | (header[1] << 16) | (header[2] << 8) | header[3];
  const int numDims = header[3];
  if (header[0] != 0 || header[1] != 0 || header[2] != kTypeUnsignedByte || numDims < 1 ||
      numDims > kMaxDims) {
    throw DataError(
        fmt::format("{}: offset 0: expected an IDX magic number 0x000008NN (unsigned bytes, 1..{} "
                    "dimensions), found {}. Is this an IDX file (MNIST format)?",
                    path, kMaxDims, hex(magic)));
  }
  IdxArray array;
  std::int64_t count = 1;
  for (int d = 0; d < numDims; ++d) {
    std::uint8_t bytes[4];
    if (file.read(bytes, 4, 4 + 4 * d) != 4) {
      throw DataError(
          fmt::format("{}: offset {}: expected the size of dimension {} of {}, "
                      "the file ends first (truncated header)",
                      path, 4 + 4 * d, d, numDims));
    }
    const std::uint32_t size = (bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3];
    if (size == 0 || size > (1u << 30)) {
      throw DataError(fmt::format("{}: offset {}: dimension {} has size {}, expected 1..2^30", path,
                                  4 + 4 * d, d, size));
    }
    array.dims.push_back(size);
    // Checked before multiplying: 2^40 x 2^30 would wrap an int64 (to 0 for these two).
    if (count > kMaxValues / size) {
      throw DataError(
          fmt::format("{}: offset {}: the header's dimensions {} make more than 2^40 values, "
                      "expected at most 2^40 (a corrupt header). Replace the file with an "
                      "intact copy.",
                      path, 4 + 4 * d, fmt::join(array.dims, "x")));
    }
    count *= size;
  }
  const std::int64_t dataOffset = 4 + 4 * numDims;
  auto values = std::make_unique<std::vector<std::uint8_t>>();
  try {
    readValues(file, path, array.dims, count, dataOffset, *values);
  } catch (const std::bad_alloc&) {
    // A .gz of 64 KiB may hold 64 MiB of values.
    throw DataError(fmt::format(
        "{}: offset {}: the header's {} values ({}) do not fit in this process's memory ({} "
        "MiB read). Expected a file that fits: use a smaller one, or give the process more "
        "memory.",
        path, dataOffset + static_cast<std::int64_t>(values->size()), count,
        fmt::join(array.dims, "x"), values->size() >> 20));
  }
  // The tensor takes the bytes as they are: a copy would need as much memory again.
  auto* bytes = values.get();
  array.values = torch::from_blob(
      bytes->data(), array.dims, [bytes](void*) { delete bytes; }, torch::kUInt8);
  values.release();
  return array;
}

ImageDataset readMnistSplit(const std::string& dir, const std::string& prefix) {
  const std::string hint =
      "HINT: --data-dir must hold the four MNIST-format files (Fashion-MNIST: apt-get install "
      "dataset-fashion-mnist -> /usr/share/datasets/fashion-mnist).";
  if (const auto problem = env::checkPath(dir, env::FileKind::kDirectory, false)) {
    throw DataError(
        fmt::format("{}: expected a directory holding {}-images-idx3-ubyte[.gz] and "
                    "{}-labels-idx1-ubyte[.gz], found {}. {}",
                    dir, prefix, prefix, problem->found, hint));
  }
  auto find = [&](const std::string& stem) {
    for (const auto& name : {stem + ".gz", stem}) {
      auto path = std::filesystem::path(dir) / name;
      std::error_code error;  // the overload without it throws std::filesystem_error
      if (std::filesystem::exists(path, error)) return path.string();
    }
    throw DataError(fmt::format("{}: neither {} nor {}.gz exists. {}", dir, stem, stem, hint));
  };
  const auto imagesPath = find(prefix + "-images-idx3-ubyte");
  const auto labelsPath = find(prefix + "-labels-idx1-ubyte");
  auto images = readIdxFile(imagesPath);
  auto labels = readIdxFile(labelsPath);
  if (images.dims.size() != 3) {
    throw DataError(fmt::format("{}: expected 3 dimensions (count, rows, cols), found {}",
                                imagesPath, images.dims.size()));
  }
  if (labels.dims.size() != 1 || labels.dims[0] != images.dims[0]) {
    throw DataError(fmt::format("{}: expected {} labels (one per image in {}), found shape {}",
                                labelsPath, images.dims[0], imagesPath,
                                fmt::join(labels.dims, "x")));
  }
  const auto maxLabel = labels.values.max().item<int>();
  if (maxLabel > 9) {
    throw DataError(fmt::format("{}: labels must be 0..9, found {}", labelsPath, maxLabel));
  }
  ImageDataset dataset;
  dataset.images = images.values.to(torch::kFloat32).div_(255.0).unsqueeze(1);
  dataset.labels = labels.values.to(torch::kInt64);
  return dataset;
}

}  // namespace ddp::data
