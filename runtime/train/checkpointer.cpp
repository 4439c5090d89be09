#include "runtime/train/checkpointer.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <thread>

#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/import_read.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "runtime/config.h"
#include "runtime/health/background_saves.h"
#include "runtime/log/logging.h"

#if HAVE_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace ddp::train {
namespace fs = std::filesystem;
namespace {

constexpr const char* kManifestFormat = "ddprun-checkpoint-manifest-v1";
constexpr const char* kMarkerFormat = "ddprun-run-complete-v1";
constexpr std::int64_t kNoCheckpoint = -1;
// How rank 0's failure to pick a checkpoint travels to the others (as the step).
constexpr std::int64_t kFailedRetryable = -2;
constexpr std::int64_t kFailedPermanent = -3;
// A step number has at most 18 digits: it fits in int64 (longer names are not ours).
const std::regex kManifestName(R"(checkpoint-(\d{1,18})\.pt\.json)");
const std::regex kDataName(R"(checkpoint-(\d{1,18})\.pt)");
const std::regex kCheckpointName(R"(checkpoint-(\d{1,18})\.pt(\.json)?)");

std::string systemError(const std::string& what, const std::string& path) {
  return fmt::format("{} '{}': {}", what, path, std::strerror(errno));
}

}  // namespace

// Note [Writing at disk speed]: pieces below kDirectWrite bytes are gathered, larger ones
// go to the kernel in pieces of at most kWritebackChunk, each followed by a request to
// start writing it back.
constexpr std::size_t kDirectWrite = 256 << 10;
constexpr std::size_t kWritebackChunk = 64 << 20;

AtomicFileWriter::AtomicFileWriter(fs::path path, unsigned mode)
    : path_(std::move(path)),
      temporary_(path_.parent_path() / ("." + path_.filename().string() + ".tmp")) {
  fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd_ < 0) throw CheckpointError(systemError("cannot create", temporary_.string()));
  if (::fchmod(fd_, mode) != 0) fail(systemError("cannot set the mode of", temporary_.string()));
  pending_.reserve(kDirectWrite);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ < 0) return;  // committed, or failed and cleaned up
  ::close(fd_);
  std::error_code ec;
  fs::remove(temporary_, ec);
}

void AtomicFileWriter::fail(const std::string& message) {
  ::close(fd_);
  fd_ = -1;
  std::error_code ec;
  fs::remove(temporary_, ec);
  throw CheckpointError(message);
}

void AtomicFileWriter::write(const char* data, std::size_t size) {
  crc32_ = crc32Of(data, size, crc32_);
  bytes_ += size;
  if (size < kDirectWrite && pending_.size() + size <= pending_.capacity()) {
    pending_.insert(pending_.end(), data, data + size);
    return;
  }
  flushPending();
  if (size < kDirectWrite) {
    pending_.insert(pending_.end(), data, data + size);
  } else {
    writeToFile(data, size);
  }
}

void AtomicFileWriter::flushPending() {
  if (pending_.empty()) return;
  writeToFile(pending_.data(), pending_.size());
  pending_.clear();
}

void AtomicFileWriter::writeToFile(const char* data, std::size_t size) {
  std::size_t written = 0;
  while (written < size) {
    const ssize_t n = ::write(fd_, data + written, std::min(size - written, kWritebackChunk));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      fail(systemError("cannot write", temporary_.string()) +
           fmt::format(" ({} bytes written)", flushed_));
    }
    written += static_cast<std::size_t>(n);
    flushed_ += static_cast<std::uint64_t>(n);
    if (flushed_ - writtenBack_ >= kWritebackChunk) {
      // Advisory: where it is not supported (some network filesystems) fsync does it all.
      ::sync_file_range(fd_, static_cast<off_t>(writtenBack_),
                        static_cast<off_t>(flushed_ - writtenBack_), SYNC_FILE_RANGE_WRITE);
      writtenBack_ = flushed_;
    }
  }
}

void AtomicFileWriter::commit() {
  flushPending();
  if (::fsync(fd_) != 0) fail(systemError("cannot flush", temporary_.string()));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const auto message = systemError("cannot flush", temporary_.string());
    std::error_code ec;
    fs::remove(temporary_, ec);
    throw CheckpointError(message);
  }
  if (::rename(temporary_.c_str(), path_.c_str()) != 0) {
    const auto message = systemError("cannot rename into place", path_.string());
    std::error_code ec;
    fs::remove(temporary_, ec);
    throw CheckpointError(message);
  }
  const int dirFd = ::open(path_.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd >= 0) {
    ::fsync(dirFd);
    ::close(dirFd);
  }
}

void writeFileAtomically(const fs::path& path, const char* data, std::size_t size, unsigned mode) {
  AtomicFileWriter writer(path, mode);
  writer.write(data, size);
  writer.commit();
}

std::string utcTimestamp(const char* format) {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, format, &utc);
  return text;
}

namespace {

// Why `dir` cannot hold checkpoints, if it cannot: it must exist (or be created) as a
// directory in which a file can be created, written and removed.
struct DirectoryProblem {
  std::string what;
  // A volume still being mounted may pass; a file in the way or a read-only mount not.
  bool mayPass = true;
};
// Note [Who may write the checkpoint directory]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// The images run as uid 1000. Kubernetes makes a volume writable for the pod's fsGroup only
// where the volume plugin supports it: on NFS it does not, and /checkpoints stays the
// export's owner's (often root, 0755), so rank 0 cannot create /checkpoints/<job>. "Permission
// denied" alone says nothing of who needs what: the error names this process's uid and gid,
// the directory that refused (the nearest one that exists) with its owner and mode, and the
// fix on the server (k8s/README.md, "Storage": an init container cannot chown under the
// restricted profile).
std::string permissionAdvice(const fs::path& dir) {
  std::error_code ec;
  fs::path refusing = fs::absolute(dir, ec);
  while (refusing.has_parent_path() && refusing != refusing.root_path() &&
         !fs::exists(refusing, ec)) {
    refusing = refusing.parent_path();
  }
  struct stat status {};
  if (::stat(refusing.c_str(), &status) != 0) return "";
  return fmt::format(
      " (this process runs as uid {} gid {} and needs write and search permission on '{}', "
      "which is owned by uid {} gid {} with mode {:04o}; on NFS the pod's fsGroup is not "
      "applied: on the server, chown {}:{} the exported directory, k8s/README.md \"Storage\")",
      ::geteuid(), ::getegid(), refusing.string(), status.st_uid, status.st_gid,
      status.st_mode & 07777, ::geteuid(), ::getegid());
}

std::optional<DirectoryProblem> directoryProblem(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    return DirectoryProblem{"it is not a directory", false};
  }
  fs::create_directories(dir, ec);
  if (ec) {
    const bool denied =
        ec == std::errc::permission_denied || ec == std::errc::operation_not_permitted;
    return DirectoryProblem{
        fmt::format("cannot create it: {}{}", ec.message(), denied ? permissionAdvice(dir) : ""),
        ec != std::errc::not_a_directory && ec != std::errc::read_only_file_system};
  }
  const auto probe = dir / fmt::format(".write-probe-{}.tmp", ::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int openErrno = errno;
    return DirectoryProblem{
        fmt::format("cannot create a file in it: {}{}", std::strerror(openErrno),
                    openErrno == EACCES || openErrno == EPERM ? permissionAdvice(dir) : ""),
        openErrno != EROFS};
  }
  const bool written = ::write(fd, "x", 1) == 1;
  const int writeErrno = errno;
  ::close(fd);
  fs::remove(probe, ec);
  if (!written) {
    return DirectoryProblem{
        fmt::format("cannot write a file in it: {}", std::strerror(writeErrno))};
  }
  return std::nullopt;
}

// Step of a checkpoint-<step>.pt(.json) name, or nullopt for other names.
std::optional<std::int64_t> stepOfName(const std::string& name, const std::regex& pattern) {
  std::smatch match;
  if (!std::regex_match(name, match, pattern)) return std::nullopt;
  return std::stoll(match[1]);  // at most 18 digits: fits
}

// The bytes of `path` in a uint8 tensor (what load() broadcasts and unpickles in place,
// without another copy) and their CRC-32. The CRC is taken a piece at a time as it is read,
// while the kernel reads ahead, so the check overlaps with the disk.
std::pair<at::Tensor, std::uint32_t> readFile(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CheckpointError(systemError("cannot open", path.string()));
  struct stat status {};
  if (::fstat(fd, &status) != 0) {
    const auto message = systemError("cannot read the size of", path.string());
    ::close(fd);
    throw CheckpointError(message);
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  const auto size = static_cast<std::size_t>(status.st_size);
  auto bytes = at::empty({static_cast<std::int64_t>(size)}, at::kByte);
  auto* data = static_cast<char*>(bytes.data_ptr());
  std::uint32_t crc = 0;
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, data + done, std::min(size - done, kWritebackChunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const auto message = n < 0 ? systemError("cannot read", path.string())
                                 : fmt::format("cannot read '{}': expected {} bytes, got {}",
                                               path.string(), size, done);
      ::close(fd);
      throw CheckpointError(message);
    }
    crc = crc32Of(data + done, static_cast<std::size_t>(n), crc);
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return {bytes, crc};
}

// The zip reader's view of bytes already in memory (torch::pickle_load wants a vector).
class BytesReader : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BytesReader(at::Tensor bytes) : bytes_(std::move(bytes)) {}
  std::size_t size() const override { return static_cast<std::size_t>(bytes_.numel()); }
  std::size_t read(std::uint64_t pos, void* buf, std::size_t n,
                   const char* /*what*/) const override {
    const auto available = pos < size() ? size() - pos : 0;
    n = std::min(n, static_cast<std::size_t>(available));
    std::memcpy(buf, static_cast<const char*>(bytes_.data_ptr()) + pos, n);
    return n;
  }

 private:
  at::Tensor bytes_;
};

c10::IValue unpickle(at::Tensor bytes) {
  caffe2::serialize::PyTorchStreamReader reader(std::make_shared<BytesReader>(std::move(bytes)));
  return torch::jit::readArchiveAndTensors("data", /*pickle_prefix=*/"", /*tensor_prefix=*/"",
                                           /*type_resolver=*/std::nullopt,
                                           /*obj_loader=*/std::nullopt, /*device=*/std::nullopt,
                                           reader);
}

// torch::pickle_save, except that dicts and lists are not tagged with their TorchScript
// types: a tag is a call to torch.jit._pickle.restore_type_tag, which Python's
// torch.load(weights_only=True) (the default since 2.6) refuses to run. Untagged, the
// file holds nothing but dicts, lists, strings, numbers and tensors. Streamed into `out`
// (Note [Writing at disk speed]).
void pickleForTorchLoad(const c10::IValue& payload, AtomicFileWriter& out) {
  std::vector<char> pickled;  // the structure only: tensor data is written apart
  torch::jit::Pickler pickler(
      [&](const char* bytes, std::size_t size) {
        pickled.insert(pickled.end(), bytes, bytes + size);
      },
      /*tensor_table=*/nullptr, /*type_renamer=*/nullptr, /*memoized_class_types=*/nullptr,
      /*get_tensor_id=*/nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(payload);
  pickler.stop();
  // The zip writer is C underneath: an exception must not cross it. Nor may the writer
  // see a short write: it would throw, and its destructor would try to finish the archive
  // and throw again, out of a destructor (std::terminate: a full disk aborted the process).
  // So a failed write is kept, the rest of the archive goes nowhere, and the kept error is
  // thrown once the writer is done.
  std::exception_ptr writeError;
  // No CRC-32 per zip record (torch.save's set_crc32_options(False)): zlib's takes a pass
  // over every byte at about 1 GB/s, and the manifest's CRC-32 of the whole file, taken as
  // it is written, already covers them. torch.load does not check them; `unzip -t` would.
  caffe2::serialize::PyTorchStreamWriter writer(
      [&](const void* bytes, std::size_t size) {
        if (writeError) return size;
        try {
          out.write(static_cast<const char*>(bytes), size);
        } catch (...) {
          writeError = std::current_exception();
        }
        return size;
      },
      /*compute_crc32=*/false);
  torch::jit::writeArchiveAndTensors("data", pickled.data(), pickled.size(), pickler.tensorData(),
                                     writer);
  writer.writeEndOfFile();
  if (writeError) std::rethrow_exception(writeError);
}

std::string checkpointName(std::int64_t step) { return fmt::format("checkpoint-{:08d}.pt", step); }

// The manifest of `checkpoint`, or an error saying what is wrong with it.
CheckpointInfo readManifest(const fs::path& checkpoint) {
  const auto manifestPath = manifestPathFor(checkpoint.string());
  std::ifstream in(manifestPath);
  if (!in) {
    throw CheckpointError(
        fmt::format("checkpoint '{}' has no manifest '{}', so its checksum cannot be verified (an "
                    "unfinished write, or a file copied without it)",
                    checkpoint.string(), manifestPath));
  }
  try {
    const auto json = nlohmann::json::parse(in);
    if (json.at("format") != kManifestFormat) {
      throw CheckpointError(fmt::format("manifest '{}': format '{}', expected '{}'", manifestPath,
                                        json.at("format").dump(), kManifestFormat));
    }
    CheckpointInfo info;
    info.path = checkpoint.string();
    info.step = json.at("step").get<std::int64_t>();
    info.bytes = json.at("bytes").get<std::uint64_t>();
    info.crc32 = json.at("crc32").get<std::uint32_t>();
    return info;
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt::format("manifest '{}' is malformed: {}", manifestPath, e.what()));
  }
}

// The bytes of `info.path` if they match the manifest; CheckpointError saying how they
// differ otherwise.
at::Tensor readVerified(const CheckpointInfo& info) {
  if (!fs::exists(info.path)) {
    throw CheckpointError(
        fmt::format("checkpoint '{}' is missing (its manifest exists)", info.path));
  }
  auto [bytes, crc] = readFile(info.path);
  const auto size = static_cast<std::uint64_t>(bytes.numel());
  if (size != info.bytes) {
    throw CheckpointError(fmt::format("checkpoint '{}' is corrupt: {} bytes, the manifest says {}",
                                      info.path, size, info.bytes));
  }
  if (crc != info.crc32) {
    throw CheckpointError(
        fmt::format("checkpoint '{}' is corrupt: CRC-32 {:#010x}, the manifest says {:#010x}",
                    info.path, crc, info.crc32));
  }
  return bytes;
}

}  // namespace

std::string manifestPathFor(const std::string& checkpointPath) { return checkpointPath + ".json"; }

std::uint32_t crc32Of(const char* data, std::size_t size, std::uint32_t sum) {
  uLong crc = sum;
  // zlib takes uInt lengths: feed large buffers in pieces.
  constexpr std::size_t kPiece = 1u << 30;
  for (std::size_t at = 0; at < size; at += kPiece) {
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(data + at),
                  static_cast<uInt>(std::min(kPiece, size - at)));
  }
  return static_cast<std::uint32_t>(crc);
}

Checkpointer::Checkpointer(CheckpointerOptions options,
                           c10::intrusive_ptr<c10d::ProcessGroup> group, c10::Device device)
    : options_(std::move(options)), group_(std::move(group)), device_(device) {
  if (options_.keepLast < 1) {
    throw ConfigError(fmt::format("keep-checkpoints must be >= 1, got {}", options_.keepLast));
  }
}

std::vector<CheckpointInfo> Checkpointer::list() const {
  std::vector<CheckpointInfo> found;
  std::error_code ec;
  if (options_.dir.empty() || !fs::is_directory(options_.dir, ec)) return found;
  for (const auto& entry : fs::directory_iterator(options_.dir, ec)) {
    const auto name = entry.path().filename().string();
    const auto step = stepOfName(name, kManifestName);
    if (!step) continue;
    CheckpointInfo info;
    info.path = (fs::path(options_.dir) / name.substr(0, name.size() - 5)).string();
    info.step = *step;
    found.push_back(info);
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.step < b.step; });
  return found;
}

// Note [One run per directory].
void Checkpointer::prepareDirectory() {
  const fs::path dir(options_.dir);
  auto problem = directoryProblem(dir);
  for (int attempt = 1; problem && problem->mayPass && attempt < options_.directoryTries;
       ++attempt) {
    log::warn("checkpoint", "event=directory_unusable dir={} try={}/{} ({}) -> retrying in {}ms",
              dir.string(), attempt, options_.directoryTries, problem->what,
              options_.directoryRetry.count());
    std::this_thread::sleep_for(options_.directoryRetry);
    problem = directoryProblem(dir);
  }
  if (problem) {
    throw CheckpointUsageError(fmt::format(
        "checkpoint directory '{}': {}. Expected a directory rank 0 can write; give another "
        "--checkpoint-dir, or mount the volume read-write",
        dir.string(), problem->what));
  }
  // Hidden temporaries of writes a crash interrupted (Note [Checkpoint files]).
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const auto name = entry.path().filename().string();
    if (name.size() > 5 && name.front() == '.' && name.ends_with(".tmp")) {
      fs::remove_all(entry.path(), ec);
      log::info("checkpoint", "event=removed_stale_temporary path={}", entry.path().string());
    }
  }
}

void Checkpointer::setAsideNewerThan(std::int64_t resumedStep) {
  const fs::path dir(options_.dir);
  std::vector<fs::path> newer;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const auto step = stepOfName(entry.path().filename().string(), kCheckpointName);
    if (step && *step > resumedStep) newer.push_back(entry.path());
  }
  // The marker names the run's final checkpoint: it goes with a line that is set aside,
  // and stays when the run resumes from that checkpoint (a finished run trained further).
  const auto marker = dir / kCompletionMarkerName;
  if ((resumedStep < 0 || !newer.empty()) && fs::exists(marker, ec)) newer.push_back(marker);
  if (newer.empty()) return;
  const auto aside = dir / "superseded" / utcTimestamp("%Y%m%dT%H%M%SZ");
  fs::create_directories(aside, ec);
  if (ec) {
    throw CheckpointError(fmt::format("cannot create '{}' to move the earlier run's files into: {}",
                                      aside.string(), ec.message()));
  }
  for (const auto& path : newer) {
    fs::rename(path, aside / path.filename(), ec);
    if (ec) {
      throw CheckpointError(fmt::format("cannot move '{}' into '{}': {}", path.string(),
                                        aside.string(), ec.message()));
    }
  }
  log::warn("checkpoint", "event=set_aside files={} into={} ({}; nothing was deleted)",
            newer.size(), aside.string(),
            resumedStep < 0 ? "a fresh start: another run's files"
                            : fmt::format("newer than step {}, the one resumed", resumedStep));
}

namespace {

using SaveClock = std::chrono::steady_clock;

double megabytesPerSecond(std::uint64_t bytes, SaveClock::duration took) {
  const double secondsTaken = std::chrono::duration<double>(took).count();
  return secondsTaken > 0 ? static_cast<double>(bytes) / 1e6 / secondsTaken : 0.0;
}

// Rank 0 writes `payload` as the checkpoint of `step` into options.dir and applies
// retention: save()'s work, on the training thread or in the background.
CheckpointInfo writeCheckpoint(const CheckpointerOptions& options, std::int64_t step,
                               const c10::IValue& payload) {
  const auto started = SaveClock::now();
  const fs::path dir(options.dir);
  std::error_code ec;
  // Note [Saving a step twice]: a run restarted after it finished resumes at its last step
  // and saves it again, with the same state (training is deterministic). Replacing it
  // would open a window (new .pt, old manifest) in which a crash loses it: keep the one
  // that verifies. It cannot be another run's (Note [One run per directory]).
  const auto existing = (dir / checkpointName(step)).string();
  if (fs::exists(manifestPathFor(existing))) {
    try {
      auto info = readManifest(existing);
      readVerified(info);
      log::info("checkpoint", "event=kept step={} path={} (already saved)", step, existing);
      return info;
    } catch (const CheckpointError&) {
      // Corrupt: overwrite it below.
    }
  }
  CheckpointInfo info;
  info.path = existing;
  info.step = step;
  {
    AtomicFileWriter file(info.path, options.fileMode);
    pickleForTorchLoad(payload, file);
    file.commit();
    info.bytes = file.bytes();
    info.crc32 = file.crc32();
  }
  const auto manifest = nlohmann::json{{"format", kManifestFormat},
                                       {"file", fs::path(info.path).filename().string()},
                                       {"step", step},
                                       {"bytes", info.bytes},
                                       {"crc32", info.crc32}}
                            .dump(2) +
                        "\n";
  writeFileAtomically(manifestPathFor(info.path), manifest.data(), manifest.size(),
                      options.fileMode);
  const auto took = SaveClock::now() - started;
  log::info("checkpoint",
            "event=saved step={} path={} bytes={} crc32={:#010x} write_ms={} MB/s={:.0f}", step,
            info.path, info.bytes, info.crc32,
            std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
            megabytesPerSecond(info.bytes, took));

  // Keep the newest keepLast valid ones up to this step (this one first). A manifest that
  // does not parse, or a .pt of another size, is not counted: it must not push a good
  // checkpoint out. The manifest goes first, so a half-finished removal leaves an orphan
  // .pt (ignored) rather than a manifest without its file.
  std::vector<CheckpointInfo> all;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const auto name = entry.path().filename().string();
    if (const auto found = stepOfName(name, kManifestName)) {
      all.push_back({.path = (dir / name.substr(0, name.size() - 5)).string(), .step = *found});
    }
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  int kept = 0;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (it->step > step) continue;  // not this run's line: left alone
    bool valid = it->step == step;
    if (!valid) {
      try {
        const auto manifestInfo = readManifest(it->path);
        valid = fs::file_size(it->path, ec) == manifestInfo.bytes && !ec;
      } catch (const CheckpointError&) {
      }
    }
    if (valid && kept < options.keepLast) {
      ++kept;
      continue;
    }
    if (!valid && kept < options.keepLast) continue;  // invalid, but newer than a kept one
    fs::remove(manifestPathFor(it->path), ec);
    fs::remove(it->path, ec);
    log::debug("checkpoint", "event=removed step={} path={}", it->step, it->path);
  }
  // A .pt whose manifest was never written (a failed or interrupted save) is never loaded:
  // remove it rather than let such files pile up.
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (stepOfName(entry.path().filename().string(), kDataName) &&
        !fs::exists(manifestPathFor(entry.path().string()))) {
      fs::remove(entry.path(), ec);
      log::warn("checkpoint", "event=removed_unfinished path={}", entry.path().string());
    }
  }
  info.total = took;
  return info;
}

#if HAVE_CUDA
// The side streams a snapshot copies on, one per device, each ordered after the work
// already queued on its device's current stream (the step that produced the tensors).
class SnapshotStreams {
 public:
  c10::cuda::CUDAStream forDevice(c10::DeviceIndex device) {
    for (const auto& [index, stream] : streams_) {
      if (index == device) return stream;
    }
    auto stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device);
    at::cuda::CUDAEvent produced;
    produced.record(c10::cuda::getCurrentCUDAStream(device));
    produced.block(stream);
    streams_.emplace_back(device, stream);
    return stream;
  }
  // The copies are done: the buffers may be written and the tensors changed.
  void synchronize() {
    for (auto& [index, stream] : streams_) stream.synchronize();
  }

 private:
  std::vector<std::pair<c10::DeviceIndex, c10::cuda::CUDAStream>> streams_;
};
#endif

// Copies the tensors of `value` into `buffers` (in order, reallocated where the shape, type
// or pinning differs), rebuilding the containers around them.
class Snapshotter {
 public:
  enum class Mode {
    kAll,         // every tensor (saveAsync)
    kDeviceOnly,  // only those not in host memory (what the file needs); the others shared
    kReserve,     // nothing copied: the buffers allocated and their pages touched
  };
  Snapshotter(std::vector<at::Tensor>& buffers, Mode mode) : buffers_(buffers), mode_(mode) {}

  c10::IValue copy(const c10::IValue& value) {
    if (value.isTensor()) return copyTensor(value.toTensor());
    if (value.isGenericDict()) {
      const auto in = value.toGenericDict();
      c10::impl::GenericDict out(in.keyType(), in.valueType());
      out.reserve(in.size());
      for (const auto& entry : in) out.insert(entry.key(), copy(entry.value()));
      return out;
    }
    if (value.isList()) {
      const auto in = value.toList();
      c10::impl::GenericList out(in.elementType());
      out.reserve(in.size());
      for (const auto& element : in) out.push_back(copy(element));
      return out;
    }
    if (value.isTuple()) {
      std::vector<c10::IValue> elements;
      for (const auto& element : value.toTupleRef().elements()) elements.push_back(copy(element));
      return c10::ivalue::Tuple::create(std::move(elements));
    }
    return value;  // strings, numbers, None: immutable
  }

  // The copies are complete.
  void finish() {
#if HAVE_CUDA
    streams_.synchronize();
#endif
  }

  std::uint64_t bytes() const { return bytes_; }

 private:
  std::vector<at::Tensor>& buffers_;
  Mode mode_;
  std::size_t next_ = 0;
  std::uint64_t bytes_ = 0;
#if HAVE_CUDA
  SnapshotStreams streams_;
#endif

  at::Tensor copyTensor(const at::Tensor& source) {
    if (mode_ == Mode::kDeviceOnly && source.is_cpu()) return source;
    const at::NoGradGuard noGrad;
    const bool pinned = source.is_cuda();
    if (next_ == buffers_.size()) buffers_.emplace_back();
    auto& buffer = buffers_[next_++];
    // is_pinned() only for a CUDA source: asked of a CPU tensor it may start CUDA.
    if (!buffer.defined() || buffer.sizes() != source.sizes() ||
        buffer.scalar_type() != source.scalar_type() || (pinned && !buffer.is_pinned())) {
      buffer = at::empty(source.sizes(),
                         at::TensorOptions().dtype(source.scalar_type()).pinned_memory(pinned));
    }
    bytes_ += static_cast<std::uint64_t>(buffer.nbytes());
    if (mode_ == Mode::kReserve) {
      buffer.zero_();  // faults the pages in now, not in the first snapshot
      return buffer;
    }
#if HAVE_CUDA
    if (source.is_cuda()) {
      const c10::cuda::CUDAStreamGuard onSide(streams_.forDevice(source.device().index()));
      buffer.copy_(source, /*non_blocking=*/true);
      return buffer;
    }
#endif
    buffer.copy_(source);
    return buffer;
  }
};

}  // namespace

Checkpointer::~Checkpointer() {
  finishReserving();
  if (!inFlight_.valid()) return;
  try {
    inFlight_.get();
  } catch (const std::exception& e) {
    log::error("checkpoint", "event=save_failed (in the background) {}", e.what());
  }
}

void Checkpointer::prepareForFirstSave() {
  if (prepared_) return;  // never loaded: a fresh start
  prepareDirectory();
  setAsideNewerThan(kNoCheckpoint);
  prepared_ = true;
}

std::optional<CheckpointInfo> Checkpointer::finishSave() {
  if (!inFlight_.valid()) return std::nullopt;
  const auto started = SaveClock::now();
  const bool wasDone = inFlight_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  auto info = inFlight_.get();  // leaves inFlight_ invalid, also when it throws
  if (!wasDone) {
    log::info(
        "checkpoint", "event=save_waited step={} ms={}", info.step,
        std::chrono::duration_cast<std::chrono::milliseconds>(SaveClock::now() - started).count());
  }
  return info;
}

std::optional<CheckpointInfo> Checkpointer::pollSave() {
  if (!inFlight_.valid() ||
      inFlight_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    return std::nullopt;
  }
  return inFlight_.get();
}

void Checkpointer::reserveSnapshot(const c10::IValue& payload) {
  if (group_->getRank() != 0 || saving() || reserving_.valid()) return;
  // The thread owns the buffers until finishReserving() hands them back.
  reserving_ = std::async(std::launch::async, [payload,
                                               buffers = std::move(snapshotBuffers_)]() mutable {
    const auto started = SaveClock::now();
    Snapshotter reserver(buffers, Snapshotter::Mode::kReserve);
    reserver.copy(payload);
    log::info(
        "checkpoint", "event=snapshot_reserved bytes={} ms={}", reserver.bytes(),
        std::chrono::duration_cast<std::chrono::milliseconds>(SaveClock::now() - started).count());
    return std::move(buffers);
  });
}

void Checkpointer::finishReserving() {
  if (!reserving_.valid()) return;
  try {
    snapshotBuffers_ = reserving_.get();
  } catch (const std::exception& e) {  // out of memory: the snapshot allocates as before
    log::warn("checkpoint", "event=snapshot_not_reserved ({})", e.what());
  }
}

c10::IValue Checkpointer::snapshot(const c10::IValue& payload, bool hostToo) {
  finishReserving();
  Snapshotter snapshotter(snapshotBuffers_,
                          hostToo ? Snapshotter::Mode::kAll : Snapshotter::Mode::kDeviceOnly);
  auto copy = snapshotter.copy(payload);
  snapshotter.finish();
  return copy;
}

std::optional<CheckpointInfo> Checkpointer::save(std::int64_t step, const c10::IValue& payload) {
  if (group_->getRank() != 0) return std::nullopt;
  finishSave();
  prepareForFirstSave();
  auto info = writeCheckpoint(options_, step, snapshot(payload, /*hostToo=*/false));
  info.blocked = info.total;
  return info;
}

void Checkpointer::saveAsync(std::int64_t step, const c10::IValue& payload) {
  if (group_->getRank() != 0) return;
  finishSave();
  prepareForFirstSave();
  const auto started = SaveClock::now();
  auto copy = snapshot(payload, /*hostToo=*/true);
  const auto blocked = SaveClock::now() - started;
  std::uint64_t bytes = 0;
  for (const auto& buffer : snapshotBuffers_) bytes += static_cast<std::uint64_t>(buffer.nbytes());
  log::info("checkpoint", "event=snapshot step={} bytes={} ms={} (writing in the background)", step,
            bytes, std::chrono::duration_cast<std::chrono::milliseconds>(blocked).count());
  // Marks the write for the watchdog until the lambda's body ends (thrown or not), not
  // until the future is collected.
  auto marker = std::make_shared<health::BackgroundSave>();
  inFlight_ =
      std::async(std::launch::async, [options = options_, step, copy = std::move(copy), started,
                                      blocked, marker = std::move(marker)]() mutable {
        const auto writing = std::move(marker);
        auto info = writeCheckpoint(options, step, copy);
        info.blocked = blocked;
        info.total = SaveClock::now() - started;
        return info;
      });
}

void Checkpointer::markComplete(const CheckpointInfo& final, const std::string& configText) {
  if (group_->getRank() != 0) return;
  const auto text = nlohmann::json{{"format", kMarkerFormat},
                                   {"step", final.step},
                                   {"checkpoint", fs::path(final.path).filename().string()},
                                   {"finished_at", utcTimestamp("%Y-%m-%dT%H:%M:%SZ")},
                                   {"config", configText}}
                        .dump(2) +
                    "\n";
  writeFileAtomically(fs::path(options_.dir) / kCompletionMarkerName, text.data(), text.size(),
                      options_.fileMode);
  log::info("checkpoint", "event=marked_complete step={} marker={}", final.step,
            (fs::path(options_.dir) / kCompletionMarkerName).string());
}

std::optional<CompletionMarker> readCompletionMarker(const std::string& dir) {
  if (dir.empty()) return std::nullopt;
  const auto path = fs::path(dir) / kCompletionMarkerName;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  try {
    std::ifstream in(path);
    const auto json = nlohmann::json::parse(in);
    if (json.at("format") != kMarkerFormat) throw std::runtime_error("another format");
    return CompletionMarker{.step = json.at("step").get<std::int64_t>(),
                            .checkpoint = json.at("checkpoint").get<std::string>(),
                            .configText = json.at("config").get<std::string>(),
                            .finishedAt = json.at("finished_at").get<std::string>()};
  } catch (const std::exception& e) {
    log::warn("checkpoint", "event=marker_ignored path={} ({}): training as usual", path.string(),
              e.what());
    return std::nullopt;
  }
}

std::optional<std::pair<CheckpointInfo, at::Tensor>> Checkpointer::pickOnMaster(
    const std::string& resume) const {
  if (resume == "none") return std::nullopt;
  if (resume != "auto") {  // an explicit path: it must be good, no fallback
    std::error_code ec;
    const auto hint = fmt::format(
        "Give a checkpoint-*.pt file that has its .json manifest beside it, 'auto' (the newest "
        "in --checkpoint-dir) or 'none'");
    if (!fs::exists(resume, ec)) {
      throw CheckpointUsageError(fmt::format("--resume '{}': no such file. {}", resume, hint));
    }
    if (!fs::is_regular_file(resume, ec)) {
      throw CheckpointUsageError(
          fmt::format("--resume '{}': not a regular file. {}", resume, hint));
    }
    try {
      auto info = readManifest(resume);
      return std::make_pair(info, readVerified(info));
    } catch (const CheckpointError& e) {
      // Named explicitly, it is read again by every restart: permanent.
      throw CheckpointUsageError(fmt::format("--resume: {}. {}", e.what(), hint));
    }
  }
  auto all = list();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      auto info = readManifest(it->path);
      auto bytes = readVerified(info);
      if (it != all.rbegin()) {
        log::warn("checkpoint", "event=fallback using={} skipped_newer={}", info.path,
                  std::distance(all.rbegin(), it));
      }
      return std::make_pair(info, std::move(bytes));
    } catch (const CheckpointError& e) {
      log::error("checkpoint", "event=corrupt {} -> trying the one before", e.what());
    }
  }
  if (!all.empty()) {
    log::error("checkpoint", "event=no_valid_checkpoint dir={} found={} -> starting from scratch",
               options_.dir, all.size());
  }
  return std::nullopt;
}

std::optional<LoadedCheckpoint> Checkpointer::load(const std::string& resume) {
  const auto cpu = torch::TensorOptions().dtype(torch::kInt64);
  // Rank 0 decides; its failure must reach the others too, or they would wait in the
  // broadcast: it travels as the step, retryable or permanent, and every rank throws.
  std::optional<std::pair<CheckpointInfo, at::Tensor>> picked;
  std::string failure;
  std::int64_t failed = 0;
  if (group_->getRank() == 0) {
    try {
      if (!options_.dir.empty()) prepareDirectory();
      picked = pickOnMaster(resume);
      if (!options_.dir.empty()) setAsideNewerThan(picked ? picked->first.step : kNoCheckpoint);
      prepared_ = true;
    } catch (const PermanentError& e) {
      failure = e.what();
      failed = kFailedPermanent;
    } catch (const CheckpointError& e) {
      failure = e.what();
      failed = kFailedRetryable;
    }
  }
  auto header = torch::tensor({picked ? picked->first.step : (failed != 0 ? failed : kNoCheckpoint),
                               picked ? picked->second.numel() : 0,
                               picked ? static_cast<std::int64_t>(picked->first.crc32) : 0},
                              cpu)
                    .to(device_);
  std::vector<at::Tensor> headerList{header};
  group_->broadcast(headerList)->wait();
  header = header.cpu();
  const auto step = header[0].item<std::int64_t>();
  const auto size = header[1].item<std::int64_t>();
  const auto crc32 = static_cast<std::uint32_t>(header[2].item<std::int64_t>());
  if (step == kFailedRetryable || step == kFailedPermanent) {
    const auto message = group_->getRank() == 0
                             ? failure
                             : fmt::format(
                                   "rank 0 could not prepare the checkpoint to resume "
                                   "from ('{}'); see its log",
                                   resume);
    if (step == kFailedPermanent) throw CheckpointUsageError(message);
    throw CheckpointError(message);
  }
  if (step == kNoCheckpoint) return std::nullopt;

  // Rank 0 sends the bytes it read and verified; the others receive into their own.
  auto bytes = group_->getRank() == 0 ? picked->second : torch::empty({size}, torch::kUInt8);
  std::vector<at::Tensor> bytesList{bytes.to(device_)};
  if (group_->getSize() > 1) group_->broadcast(bytesList)->wait();
  bytes = bytesList[0].cpu();
  LoadedCheckpoint loaded;
  if (picked) {
    loaded.info = picked->first;
  } else {
    loaded.info.step = step;
    loaded.info.bytes = static_cast<std::uint64_t>(size);
    loaded.info.crc32 = crc32;  // rank 0's, of the bytes it verified
  }
  try {
    loaded.payload = unpickle(bytes);
  } catch (const c10::Error& e) {
    throw CheckpointMismatchError(fmt::format(
        "'{}' verifies against its manifest but does not unpickle: {}. Was it written by "
        "another program? Resume from another checkpoint, or start fresh with --resume none",
        loaded.info.path, e.what_without_backtrace()));
  }
  return loaded;
}

}  // namespace ddp::train
