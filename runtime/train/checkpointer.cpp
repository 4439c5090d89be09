#include "runtime/train/checkpointer.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "runtime/log/logging.h"

namespace ddp::train {
namespace fs = std::filesystem;
namespace {

constexpr const char* kManifestFormat = "ddprun-checkpoint-manifest-v1";
constexpr std::int64_t kNoCheckpoint = -1;

std::string systemError(const std::string& what, const std::string& path) {
  return fmt::format("{} '{}': {}", what, path, std::strerror(errno));
}

// Writes `data` to `path` atomically: hidden temporary beside it, fsync, rename, fsync
// of the directory. On failure the temporary is removed and `path` is untouched.
void writeAtomically(const fs::path& path, const char* data, std::size_t size) {
  const fs::path tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw CheckpointError(systemError("cannot create", tmp.string()));
  std::size_t written = 0;
  while (written < size) {
    const ssize_t n = ::write(fd, data + written, size - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const auto message = systemError("cannot write", tmp.string());
      ::close(fd);
      fs::remove(tmp);
      throw CheckpointError(message + fmt::format(" ({} of {} bytes written)", written, size));
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const auto message = systemError("cannot flush", tmp.string());
    fs::remove(tmp);
    throw CheckpointError(message);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const auto message = systemError("cannot rename into place", path.string());
    fs::remove(tmp);
    throw CheckpointError(message);
  }
  const int dirFd = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd >= 0) {
    ::fsync(dirFd);
    ::close(dirFd);
  }
}

std::vector<char> readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError(systemError("cannot open", path.string()));
  std::vector<char> bytes(fs::file_size(path));
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (in.gcount() != static_cast<std::streamsize>(bytes.size())) {
    throw CheckpointError(fmt::format("cannot read '{}': expected {} bytes, got {}", path.string(),
                                      bytes.size(), in.gcount()));
  }
  return bytes;
}

// torch::pickle_save, except that dicts and lists are not tagged with their TorchScript
// types: a tag is a call to torch.jit._pickle.restore_type_tag, which Python's
// torch.load(weights_only=True) (the default since 2.6) refuses to run. Untagged, the
// file holds nothing but dicts, lists, strings, numbers and tensors.
std::vector<char> pickleForTorchLoad(const c10::IValue& payload) {
  std::vector<char> pickled;
  torch::jit::Pickler pickler(
      [&](const char* bytes, std::size_t size) {
        pickled.insert(pickled.end(), bytes, bytes + size);
      },
      /*tensor_table=*/nullptr, /*type_renamer=*/nullptr, /*memoized_class_types=*/nullptr,
      /*get_tensor_id=*/nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(payload);
  pickler.stop();
  std::vector<char> archive;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* bytes, std::size_t size) {
    archive.insert(archive.end(), static_cast<const char*>(bytes),
                   static_cast<const char*>(bytes) + size);
    return size;
  });
  torch::jit::writeArchiveAndTensors("data", pickled.data(), pickled.size(), pickler.tensorData(),
                                     writer);
  writer.writeEndOfFile();
  return archive;
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
std::vector<char> readVerified(const CheckpointInfo& info) {
  if (!fs::exists(info.path)) {
    throw CheckpointError(
        fmt::format("checkpoint '{}' is missing (its manifest exists)", info.path));
  }
  auto bytes = readFile(info.path);
  if (bytes.size() != info.bytes) {
    throw CheckpointError(fmt::format("checkpoint '{}' is corrupt: {} bytes, the manifest says {}",
                                      info.path, bytes.size(), info.bytes));
  }
  const auto crc = crc32Of(bytes.data(), bytes.size());
  if (crc != info.crc32) {
    throw CheckpointError(
        fmt::format("checkpoint '{}' is corrupt: CRC-32 {:#010x}, the manifest says {:#010x}",
                    info.path, crc, info.crc32));
  }
  return bytes;
}

}  // namespace

std::string manifestPathFor(const std::string& checkpointPath) { return checkpointPath + ".json"; }

std::uint32_t crc32Of(const char* data, std::size_t size) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
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
  if (options_.dir.empty() || !fs::is_directory(options_.dir)) return found;
  static const std::regex kName(R"(checkpoint-(\d+)\.pt\.json)");
  for (const auto& entry : fs::directory_iterator(options_.dir)) {
    std::smatch match;
    const auto name = entry.path().filename().string();
    if (!std::regex_match(name, match, kName)) continue;
    CheckpointInfo info;
    info.path = (fs::path(options_.dir) / name.substr(0, name.size() - 5)).string();
    info.step = std::stoll(match[1]);
    found.push_back(info);
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.step < b.step; });
  return found;
}

std::optional<CheckpointInfo> Checkpointer::save(std::int64_t step, const c10::IValue& payload) {
  if (group_->getRank() != 0) return std::nullopt;
  const fs::path dir(options_.dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    throw CheckpointError(
        fmt::format("cannot create checkpoint directory '{}': {}", dir.string(), ec.message()));
  }
  // Note [Saving a step twice]: a run restarted after it finished resumes at its last step
  // and saves it again, with the same state (training is deterministic). Replacing it
  // would open a window (new .pt, old manifest) in which a crash loses it: keep the one
  // that verifies.
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
  const auto bytes = pickleForTorchLoad(payload);
  CheckpointInfo info;
  info.path = existing;
  info.step = step;
  info.bytes = bytes.size();
  info.crc32 = crc32Of(bytes.data(), bytes.size());
  writeAtomically(info.path, bytes.data(), bytes.size());
  const auto manifest = nlohmann::json{{"format", kManifestFormat},
                                       {"file", fs::path(info.path).filename().string()},
                                       {"step", step},
                                       {"bytes", info.bytes},
                                       {"crc32", info.crc32}}
                            .dump(2) +
                        "\n";
  writeAtomically(manifestPathFor(info.path), manifest.data(), manifest.size());
  log::info("checkpoint", "event=saved step={} path={} bytes={} crc32={:#010x}", step, info.path,
            info.bytes, info.crc32);

  // Keep the newest keepLast; the manifest goes first, so a half-finished removal
  // leaves an orphan .pt (ignored) rather than a manifest without its file.
  auto all = list();
  for (std::size_t i = 0; i + options_.keepLast < all.size(); ++i) {
    fs::remove(manifestPathFor(all[i].path), ec);
    fs::remove(all[i].path, ec);
    log::debug("checkpoint", "event=removed step={} path={}", all[i].step, all[i].path);
  }
  // A .pt whose manifest was never written (a failed or interrupted save) is never loaded:
  // remove it rather than let such files pile up.
  static const std::regex kData(R"(checkpoint-\d+\.pt)");
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const auto name = entry.path().filename().string();
    if (std::regex_match(name, kData) && !fs::exists(manifestPathFor(entry.path().string()))) {
      fs::remove(entry.path(), ec);
      log::warn("checkpoint", "event=removed_unfinished path={}", entry.path().string());
    }
  }
  return info;
}

std::optional<std::pair<CheckpointInfo, std::vector<char>>> Checkpointer::pickOnMaster(
    const std::string& resume) const {
  if (resume == "none") return std::nullopt;
  if (resume != "auto") {  // an explicit path: it must be good, no fallback
    if (!fs::exists(resume)) {
      throw CheckpointError(fmt::format(
          "--resume '{}': no such file. Give a checkpoint-*.pt file, 'auto' (the newest in "
          "--checkpoint-dir) or 'none'",
          resume));
    }
    auto info = readManifest(resume);
    return std::make_pair(info, readVerified(info));
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
  // Rank 0 decides; its failure to read an explicit path must reach the others too, or
  // they would wait in the broadcast: it travels as step -2 and every rank throws.
  std::optional<std::pair<CheckpointInfo, std::vector<char>>> picked;
  std::string failure;
  if (group_->getRank() == 0) {
    try {
      picked = pickOnMaster(resume);
    } catch (const CheckpointError& e) {
      failure = e.what();
    }
  }
  auto header = torch::tensor({picked ? picked->first.step : (failure.empty() ? kNoCheckpoint : -2),
                               picked ? static_cast<std::int64_t>(picked->second.size()) : 0},
                              cpu)
                    .to(device_);
  std::vector<at::Tensor> headerList{header};
  group_->broadcast(headerList)->wait();
  header = header.cpu();
  const auto step = header[0].item<std::int64_t>();
  const auto size = header[1].item<std::int64_t>();
  if (step == -2) {
    throw CheckpointError(group_->getRank() == 0
                              ? failure
                              : fmt::format("rank 0 could not read the checkpoint to resume "
                                            "from ('{}'); see its log",
                                            resume));
  }
  if (step == kNoCheckpoint) return std::nullopt;

  auto bytes = torch::empty({size}, torch::kUInt8);
  if (group_->getRank() == 0) std::memcpy(bytes.data_ptr(), picked->second.data(), size);
  std::vector<at::Tensor> bytesList{bytes.to(device_)};
  group_->broadcast(bytesList)->wait();
  bytes = bytesList[0].cpu();
  std::vector<char> data(static_cast<const char*>(bytes.data_ptr()),
                         static_cast<const char*>(bytes.data_ptr()) + size);
  LoadedCheckpoint loaded;
  if (picked) {
    loaded.info = picked->first;
  } else {
    loaded.info.step = step;
    loaded.info.bytes = static_cast<std::uint64_t>(size);
    loaded.info.crc32 = crc32Of(data.data(), data.size());
  }
  loaded.payload = torch::pickle_load(data);
  return loaded;
}

}  // namespace ddp::train
