// Checkpoints on the master, read back by every rank.
//
// Note [Checkpoint files]
// - Rank 0 alone writes, into `dir`: checkpoint-<step, 8 digits>.pt, the payload as
//   torch::pickle_save writes it (Python's torch.load reads it: a dict of tensors and
//   metadata), then checkpoint-<step>.pt.json, its manifest: step, size and CRC-32 of
//   the .pt. Each is written to a hidden temporary file, fsync'ed, renamed into place,
//   and the directory fsync'ed: a crash leaves either the old set or the new one. A .pt
//   without its manifest is an unfinished write and never loaded.
//   Files are created with mode fileMode (0640: no world access), whatever the umask.
// - After a save, the newest keepLast valid checkpoints (a manifest that parses and a .pt
//   of its size) remain; the one just saved is always one of them.
// - Loading is collective: rank 0 picks the checkpoint (the newest whose size and CRC
//   match its manifest; a corrupt one is reported and the one before it tried), reads
//   it and broadcasts the bytes over the process group. Only the master needs the
//   directory: workers without the volume resume all the same.
//
// Note [One run per directory]
// The top level of `dir` holds one line of checkpoints: the run being continued. Before
// anything is loaded or saved, rank 0
//   - checks that `dir` is a directory it can write (a few tries over directoryRetry x
//     directoryTries for a volume still being mounted), else CheckpointUsageError;
//   - removes the hidden temporaries (.*.tmp) a crashed write left;
//   - moves every checkpoint newer than the one it resumes from (all of them for a fresh
//     start: --resume none, or nothing valid to resume) and the completion marker into
//     dir/superseded/<UTC time>/. So a fresh start never keeps ("already saved") or
//     later resumes another run's file, a corrupt newer file is out of retention's
//     count, and nothing is deleted: the older run is there to copy back by hand.
// A Checkpointer that saves without having loaded is a fresh start.
//
// Note [Asynchronous saves]
// ~~~~~~~~~~~~~~~~~~~~~~~~~
// saveAsync() copies the payload's tensors into host buffers (the snapshot; CUDA tensors
// into pinned buffers on a side stream) and returns: training goes on while a background
// thread writes the snapshot exactly as save() does (Note [Checkpoint files]).
// - At most one save is in flight. A second request waits for it rather than skip: a
//   checkpoint asked for is one the user counts on to bound the work a failure loses.
//   Waiting is logged (event=save_waited) so the interval can be raised when saves come
//   faster than the disk writes them.
// - The snapshot buffers are kept and reused by the next snapshot of the same shapes:
//   allocating and faulting in gigabytes (or pinning them) at every save would cost more
//   than the copy. So one save's host memory is held once, not per save. reserveSnapshot()
//   allocates them ahead, on a thread, so that not even the first save pays for it.
// - save(), load(), finishSave() and the destructor wait for the save in flight. A failed
//   background write is rethrown (CheckpointError) by the call that collects it; the
//   destructor only logs it. A process killed mid-write leaves the previous checkpoint as
//   it was: the new one is still a hidden temporary without a manifest.
//
// Note [Writing at disk speed]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// The archive streams into the file as the zip writer produces it: no copy of the whole
// file in memory. Small pieces (zip headers, the pickle) are gathered into one buffer, tensor
// data goes to write() directly, the CRC-32 is computed on the way, and every
// kWritebackChunk bytes sync_file_range() sets the disk writing what is written so far. So
// the final fsync finds little left, and the CPU's work (CRC, copying into the page cache)
// overlaps with the disk's instead of preceding it, as it does for dd conv=fsync.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <future>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>
#include <c10/util/intrusive_ptr.h>

#include "runtime/error.h"

namespace c10d {
class ProcessGroup;
}

namespace ddp::train {

// Writing or reading a checkpoint failed (I/O): the volume may recover, an older
// checkpoint may do.
class CheckpointError : public TransientError {
 public:
  using TransientError::TransientError;
};

// A checkpoint setting no restart can fix: a --resume path that is missing, not a file,
// or not a verified checkpoint; a checkpoint directory that is a file, read-only or
// cannot be created.
class CheckpointUsageError : public PermanentError {
 public:
  using PermanentError::PermanentError;
};

// A checkpoint that does not fit this run: another format, model (tensor names, count or
// shapes) or optimizer. Permanent, unlike CheckpointError (I/O, corruption): a restart
// would read the same file and fail the same way.
class CheckpointMismatchError : public PermanentError {
 public:
  using PermanentError::PermanentError;
};

struct CheckpointerOptions {
  std::string dir;           // where checkpoints live (created by rank 0 when missing)
  int keepLast = 3;          // how many to keep after each save
  unsigned fileMode = 0640;  // of every file written (checkpoints, manifests, marker)
  // A directory that cannot be written is tried this often, directoryRetry apart, before
  // the run gives up (a volume mount that is late).
  int directoryTries = 3;
  std::chrono::milliseconds directoryRetry{10000};
};

// Note [Completion marker]: rank 0 writes dir/run-complete.json with the final checkpoint
// of a run that reached its last step. A pod of the finished job, recreated on the same
// directory with the same configuration, then ends at once (exit 0) instead of waiting
// for peers that will not come back.
struct CompletionMarker {
  std::int64_t step = 0;
  std::string checkpoint;  // the final .pt
  std::string configText;  // the run's resolved configuration (TrainerOptions::configText)
  std::string finishedAt;  // UTC, ISO 8601
};

inline constexpr const char* kCompletionMarkerName = "run-complete.json";

// The marker in `dir`, if there is one that parses (a malformed one is ignored, with a
// warning: the run then trains as usual).
std::optional<CompletionMarker> readCompletionMarker(const std::string& dir);

struct CheckpointInfo {
  std::string path;  // the .pt file
  std::int64_t step = 0;
  std::uint64_t bytes = 0;
  std::uint32_t crc32 = 0;
  // How long a save took: the training thread's part (for saveAsync: the snapshot; for
  // save(): everything) and the whole save, snapshot to manifest. Zero after a load.
  std::chrono::nanoseconds blocked{};
  std::chrono::nanoseconds total{};
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
  // Waits for a save in flight (Note [Asynchronous saves]).
  ~Checkpointer();
  Checkpointer(Checkpointer&&) = default;
  Checkpointer& operator=(Checkpointer&&) = delete;

  // Rank 0 writes `payload` as the checkpoint of `step`; other ranks do nothing. Throws
  // CheckpointError (naming the path and the system error) when the write fails; the
  // previous checkpoints are then untouched. Waits for a save in flight first.
  std::optional<CheckpointInfo> save(std::int64_t step, const c10::IValue& payload);

  // Rank 0 snapshots `payload` and writes it in the background (Note [Asynchronous saves]);
  // other ranks do nothing. Returns once the payload's tensors may change again. Waits
  // for a save in flight first, rethrowing its error.
  void saveAsync(std::int64_t step, const c10::IValue& payload);

  // Waits for the save in flight: what it saved, nullopt when none was in flight. Rethrows
  // its error.
  std::optional<CheckpointInfo> finishSave();

  // Never waits: what the save in flight saved if it has finished (once), else nullopt.
  // Rethrows its error.
  std::optional<CheckpointInfo> pollSave();

  bool saving() const { return inFlight_.valid(); }

  // Rank 0: allocates the snapshot buffers for payloads shaped like `payload` and faults
  // their pages in, on a thread, while training goes on; the first saveAsync then only
  // copies. `payload` must keep its tensors' shapes (call it after the first optimizer
  // step: optimizer state appears there).
  void reserveSnapshot(const c10::IValue& payload);
  // Waits for reserveSnapshot's thread (the next snapshot does so anyway).
  void finishReserving();

  // Collective. `resume`: "auto" (the newest valid checkpoint in dir, if any), "none",
  // or the path of a .pt file (it must exist and match its manifest, else
  // CheckpointUsageError). Prepares dir first (Note [One run per directory]).
  std::optional<LoadedCheckpoint> load(const std::string& resume);

  // Rank 0: writes the completion marker for `final` (Note [Completion marker]).
  void markComplete(const CheckpointInfo& final, const std::string& configText);

  // The checkpoints with a manifest in dir, oldest first (rank 0's view; no checks).
  std::vector<CheckpointInfo> list() const;

  const CheckpointerOptions& options() const { return options_; }

 private:
  CheckpointerOptions options_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  c10::Device device_;
  bool prepared_ = false;                    // rank 0 has done Note [One run per directory]
  std::future<CheckpointInfo> inFlight_;     // the background write (Note [Asynchronous saves])
  std::vector<at::Tensor> snapshotBuffers_;  // reused by every snapshot, in payload order
  std::future<std::vector<at::Tensor>> reserving_;  // reserveSnapshot's thread, with the buffers

  // Rank 0, before the first save of a run that loaded nothing.
  void prepareForFirstSave();
  // `payload` in host memory: its tensors copied into snapshotBuffers_ (`hostToo` false:
  // only those on a device), the rest shared.
  c10::IValue snapshot(const c10::IValue& payload, bool hostToo);

  // Rank 0: checks dir and removes stale temporaries, then sets aside what is newer
  // than `resumedStep` (-1: everything).
  void prepareDirectory();
  void setAsideNewerThan(std::int64_t resumedStep);

  // Rank 0: the bytes of the checkpoint to resume from, verified; nullopt for none.
  std::optional<std::pair<CheckpointInfo, at::Tensor>> pickOnMaster(
      const std::string& resume) const;
};

// The manifest path of a checkpoint file.
std::string manifestPathFor(const std::string& checkpointPath);

// Writes a file atomically, streamed (Note [Writing at disk speed]): into a hidden temporary
// beside `path`, then commit(): fsync, rename, fsync of the directory. The file gets
// `mode` exactly, whatever the umask. On failure (CheckpointError naming the path), and
// when destroyed uncommitted, the temporary is removed and `path` is untouched.
class AtomicFileWriter {
 public:
  AtomicFileWriter(std::filesystem::path path, unsigned mode);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const char* data, std::size_t size);
  void commit();

  std::uint64_t bytes() const { return bytes_; }
  std::uint32_t crc32() const { return crc32_; }  // of the bytes written so far

 private:
  std::filesystem::path path_;
  std::filesystem::path temporary_;
  int fd_ = -1;
  std::vector<char> pending_;      // small pieces, gathered
  std::uint64_t bytes_ = 0;        // written by the caller
  std::uint64_t flushed_ = 0;      // handed to the kernel
  std::uint64_t writtenBack_ = 0;  // sync_file_range'd up to here
  std::uint32_t crc32_ = 0;

  void writeToFile(const char* data, std::size_t size);
  void flushPending();
  [[noreturn]] void fail(const std::string& message);
};

// Writes `size` bytes to `path` atomically (AtomicFileWriter).
void writeFileAtomically(const std::filesystem::path& path, const char* data, std::size_t size,
                         unsigned mode);

// The current UTC time as std::strftime writes it with `format`.
std::string utcTimestamp(const char* format);

// CRC-32 (zlib's) of a byte range; `crc`: of the bytes before it, to continue a sum.
std::uint32_t crc32Of(const char* data, std::size_t size, std::uint32_t crc = 0);

}  // namespace ddp::train
