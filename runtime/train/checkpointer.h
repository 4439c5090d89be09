// Checkpoints on the master, read back by every rank.
//
// Note [Checkpoint files]
// - Rank 0 alone writes, into `dir`: checkpoint-<step, 8 digits>.pt, the payload as
//   torch::pickle_save writes it (Python's torch.load reads it: a dict of tensors and
//   metadata), then checkpoint-<step>.pt.json, its manifest: step, size and CRC-32 of
//   the .pt. Each is written to a hidden temporary file, fsync'ed, renamed into place,
//   and the directory fsync'ed: a crash leaves either the old set or the new one. A .pt
//   without its manifest is an unfinished write and never loaded.
// - After a save only the newest keepLast checkpoints remain.
// - Loading is collective: rank 0 picks the checkpoint (the newest whose size and CRC
//   match its manifest; a corrupt one is reported and the one before it tried), reads
//   it and broadcasts the bytes over the process group. Only the master needs the
//   directory: workers without the volume resume all the same.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>
#include <c10/util/intrusive_ptr.h>

#include "runtime/error.h"

namespace c10d {
class ProcessGroup;
}

namespace ddp::train {

// Writing or reading a checkpoint failed (I/O, corruption of an explicitly named file).
class CheckpointError : public TransientError {
 public:
  using TransientError::TransientError;
};

struct CheckpointerOptions {
  std::string dir;   // where checkpoints live (created by rank 0 when missing)
  int keepLast = 3;  // how many to keep after each save
};

struct CheckpointInfo {
  std::string path;  // the .pt file
  std::int64_t step = 0;
  std::uint64_t bytes = 0;
  std::uint32_t crc32 = 0;
};

struct LoadedCheckpoint {
  CheckpointInfo info;
  c10::IValue payload;  // what save() was given
};

class Checkpointer {
 public:
  // `device`: where the process group's tensors must live (CUDA for NCCL).
  Checkpointer(CheckpointerOptions options, c10::intrusive_ptr<c10d::ProcessGroup> group,
               c10::Device device);

  // Rank 0 writes `payload` as the checkpoint of `step`; other ranks do nothing. Throws
  // CheckpointError (naming the path and the system error) when the write fails; the
  // previous checkpoints are then untouched.
  std::optional<CheckpointInfo> save(std::int64_t step, const c10::IValue& payload);

  // Collective. `resume`: "auto" (the newest valid checkpoint in dir, if any), "none",
  // or the path of a .pt file (it must exist and match its manifest).
  std::optional<LoadedCheckpoint> load(const std::string& resume);

  // The checkpoints with a manifest in dir, oldest first (rank 0's view; no checks).
  std::vector<CheckpointInfo> list() const;

  const CheckpointerOptions& options() const { return options_; }

 private:
  CheckpointerOptions options_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  c10::Device device_;

  // Rank 0: the bytes of the checkpoint to resume from, verified; nullopt for none.
  std::optional<std::pair<CheckpointInfo, std::vector<char>>> pickOnMaster(
      const std::string& resume) const;
};

// The manifest path of a checkpoint file.
std::string manifestPathFor(const std::string& checkpointPath);

// CRC-32 (zlib's) of a byte range.
std::uint32_t crc32Of(const char* data, std::size_t size);

}  // namespace ddp::train
