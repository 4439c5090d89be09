// Reader for the IDX format of MNIST and Fashion-MNIST, plain or gzip-compressed
// (zlib reads both transparently). Malformed files get an error naming the file, the
// byte offset, what was expected and what was found; a header that claims more data
// than the file holds is reported as truncation, never answered by allocating it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "data/data_error.h"

namespace ddp::data {

struct IdxArray {
  std::vector<std::int64_t> dims;  // e.g. {60000, 28, 28}
  torch::Tensor values;            // uint8, shape = dims
};

// Reads an IDX file of unsigned bytes (type code 0x08), any number of dimensions.
IdxArray readIdxFile(const std::string& path);

// A labelled image set: images float32 [N, 1, rows, cols] scaled to [0, 1],
// labels int64 [N].
struct ImageDataset {
  torch::Tensor images;
  torch::Tensor labels;
};

// Reads "<prefix>-images-idx3-ubyte[.gz]" and "<prefix>-labels-idx1-ubyte[.gz]" from
// `dir` (prefix "train" or "t10k": the MNIST naming), and checks that they agree.
ImageDataset readMnistSplit(const std::string& dir, const std::string& prefix);

}  // namespace ddp::data
