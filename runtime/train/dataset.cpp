#include "runtime/train/dataset.h"

#include <torch/torch.h>

namespace ddp::train {

InMemoryDataset::InMemoryDataset(at::Tensor inputs, at::Tensor targets)
    : inputs_(std::move(inputs)), targets_(std::move(targets)) {
  TORCH_CHECK(inputs_.size(0) == targets_.size(0), "InMemoryDataset: ", inputs_.size(0),
              " inputs but ", targets_.size(0), " targets");
}

std::int64_t InMemoryDataset::size() const { return inputs_.size(0); }

Batch InMemoryDataset::read(const at::Tensor& indices) {
  return {inputs_.index_select(0, indices), targets_.index_select(0, indices)};
}

}  // namespace ddp::train
