// ddp::train::Checkpointer in a single-process gloo group (Note [Checkpoint files]): a
// payload dict survives save and load; "auto" takes the newest valid checkpoint and
// falls back past a corrupt one; keepLast prunes files and manifests; a .pt without a
// manifest is ignored; explicit paths must exist and match their manifest; a failed
// write names the path and leaves the earlier checkpoints as they were; no temporary
// files remain.
#include "runtime/train/checkpointer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "runtime/distributed.h"
#include "tests/support/subprocess.h"

namespace ddp::train {
namespace {

namespace fs = std::filesystem;

// A payload as the trainer writes one: tensors, integers, strings, a list.
c10::IValue payloadFor(std::int64_t step) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("weights", torch::arange(12, torch::kFloat32).reshape({3, 4}) * (step + 1));
  dict.insert("counts", torch::full({5}, step, torch::kInt64));
  dict.insert("step", step);
  dict.insert("name", "run-" + std::to_string(step));
  dict.insert("history", c10::List<std::int64_t>({step, step * 2, step * 3}));
  return dict;
}

void expectPayloadOf(std::int64_t step, const c10::IValue& payload) {
  ASSERT_TRUE(payload.isGenericDict()) << payload.tagKind();
  const auto dict = payload.toGenericDict();
  EXPECT_EQ(dict.size(), 5u);
  const auto weights = dict.at("weights").toTensor();
  EXPECT_EQ(weights.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(
      torch::equal(weights, torch::arange(12, torch::kFloat32).reshape({3, 4}) * (step + 1)))
      << weights;
  EXPECT_TRUE(torch::equal(dict.at("counts").toTensor(), torch::full({5}, step, torch::kInt64)));
  EXPECT_EQ(dict.at("step").toInt(), step);
  EXPECT_EQ(dict.at("name").toStringRef(), "run-" + std::to_string(step));
  EXPECT_EQ(dict.at("history").toIntVector(),
            (std::vector<std::int64_t>{step, step * 2, step * 3}));
}

std::vector<char> readBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void writeBytes(const fs::path& path, const std::vector<char>& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
}

// Flips the bits of one byte in the middle of `path` (its size stays the same).
void flipAByte(const fs::path& path) {
  auto bytes = readBytes(path);
  ASSERT_FALSE(bytes.empty()) << path;
  bytes[bytes.size() / 2] = static_cast<char>(~bytes[bytes.size() / 2]);
  writeBytes(path, bytes);
}

std::set<std::string> filesIn(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir))
    names.insert(entry.path().filename().string());
  return names;
}

std::string hex(std::uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", value);
  return text;
}

// The message of the CheckpointError `f` throws, or what happened instead.
template <typename F>
std::string checkpointErrorOf(F&& f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("unexpected exception type: ") + e.what();
  }
  return "no exception";
}

class CheckpointerTest : public ::testing::Test {
 protected:
  // One process group of one rank for the whole suite.
  static void SetUpTestSuite() {
    ::setenv("GLOO_SOCKET_IFNAME", "lo", /*overwrite=*/0);
    InitOptions options;
    options.backend = "gloo";
    options.environment =
        env::EnvMap{{"RANK", "0"},
                    {"WORLD_SIZE", "1"},
                    {"LOCAL_RANK", "0"},
                    {"LOCAL_WORLD_SIZE", "1"},
                    {"MASTER_ADDR", "127.0.0.1"},
                    {"MASTER_PORT", std::to_string(ddp::testing::findFreePort())}};
    options.rendezvousTimeout = std::chrono::seconds(30);
    options.collectiveTimeout = std::chrono::seconds(30);
    dist_ = new Distributed(init(options));
  }
  static void TearDownTestSuite() {
    delete dist_;
    dist_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(dist_, nullptr);
    root_ = fs::temp_directory_path() /
            ("ddprun_checkpointer_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    dir_ = root_ / "checkpoints";
  }
  void TearDown() override { fs::remove_all(root_); }

  Checkpointer checkpointer(int keepLast = 3, std::optional<fs::path> dir = std::nullopt) {
    return Checkpointer({dir.value_or(dir_).string(), keepLast}, dist_->group, dist_->device);
  }
  std::string pathOf(std::int64_t step) const {
    char name[64];
    std::snprintf(name, sizeof name, "checkpoint-%08lld.pt", static_cast<long long>(step));
    return (dir_ / name).string();
  }

  static Distributed* dist_;
  fs::path root_;
  fs::path dir_;
};

Distributed* CheckpointerTest::dist_ = nullptr;

TEST_F(CheckpointerTest, SaveThenLoadAutoReturnsTheNewestPayload) {
  auto c = checkpointer();
  const auto first = c.save(10, payloadFor(10));
  const auto second = c.save(20, payloadFor(20));
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(first->path, pathOf(10));
  EXPECT_EQ(second->path, pathOf(20));
  EXPECT_EQ(second->step, 20);
  // The info describes the file on disk.
  const auto bytes = readBytes(second->path);
  EXPECT_EQ(second->bytes, bytes.size());
  EXPECT_EQ(second->crc32, crc32Of(bytes.data(), bytes.size()));
  EXPECT_TRUE(fs::exists(manifestPathFor(second->path)));
  EXPECT_EQ(manifestPathFor(second->path), second->path + ".json");

  const auto listed = c.list();
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].step, 10);
  EXPECT_EQ(listed[1].step, 20);

  const auto loaded = c.load("auto");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->info.step, 20);
  EXPECT_EQ(loaded->info.path, second->path);
  EXPECT_EQ(loaded->info.bytes, second->bytes);
  EXPECT_EQ(loaded->info.crc32, second->crc32);
  expectPayloadOf(20, loaded->payload);

  // An explicit path loads that one, newer ones notwithstanding.
  const auto older = c.load(first->path);
  ASSERT_TRUE(older.has_value());
  EXPECT_EQ(older->info.step, 10);
  expectPayloadOf(10, older->payload);
}

TEST_F(CheckpointerTest, KeepLastPrunesOlderFilesAndManifestsAndNoTemporariesRemain) {
  auto c = checkpointer(/*keepLast=*/2);
  for (std::int64_t step = 1; step <= 5; ++step) {
    c.save(step * 100, payloadFor(step * 100));
    // After every save: only the newest two, each with its manifest, nothing else.
    std::set<std::string> expected;
    for (std::int64_t kept = std::max<std::int64_t>(1, step - 1); kept <= step; ++kept) {
      const auto name = fs::path(pathOf(kept * 100)).filename().string();
      expected.insert(name);
      expected.insert(name + ".json");
    }
    EXPECT_EQ(filesIn(dir_), expected) << "after saving step " << step * 100;
  }
  const auto listed = c.list();
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].step, 400);
  EXPECT_EQ(listed[1].step, 500);
}

TEST_F(CheckpointerTest, CorruptNewestFallsBackToThePreviousOne) {
  auto c = checkpointer();
  c.save(1, payloadFor(1));
  c.save(2, payloadFor(2));
  c.save(3, payloadFor(3));
  flipAByte(pathOf(3));
  auto loaded = c.load("auto");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->info.step, 2);
  expectPayloadOf(2, loaded->payload);

  // A truncated one (size differs from the manifest) is skipped as well.
  auto bytes = readBytes(pathOf(2));
  bytes.resize(bytes.size() - 10);
  writeBytes(pathOf(2), bytes);
  loaded = c.load("auto");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->info.step, 1);
  expectPayloadOf(1, loaded->payload);

  // And with none valid, auto starts fresh.
  flipAByte(pathOf(1));
  EXPECT_FALSE(c.load("auto").has_value());
}

TEST_F(CheckpointerTest, CheckpointWithoutManifestIsIgnored) {
  auto c = checkpointer();
  c.save(5, payloadFor(5));
  // A newer, complete-looking .pt whose manifest was never written.
  fs::copy_file(pathOf(5), pathOf(9));
  ASSERT_EQ(c.list().size(), 1u);
  const auto loaded = c.load("auto");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->info.step, 5);
  // Named explicitly, it is refused: its checksum cannot be verified.
  EXPECT_EQ(checkpointErrorOf([&] { c.load(pathOf(9)); }),
            "checkpoint '" + pathOf(9) + "' has no manifest '" + pathOf(9) +
                ".json', so its checksum cannot be verified (an unfinished write, or a file "
                "copied without it)");
}

TEST_F(CheckpointerTest, NoneAndAnEmptyDirectoryLoadNothing) {
  auto c = checkpointer();
  EXPECT_FALSE(c.load("auto").has_value()) << "directory not created yet";
  EXPECT_TRUE(c.list().empty());
  c.save(1, payloadFor(1));
  EXPECT_FALSE(c.load("none").has_value());
}

TEST_F(CheckpointerTest, ExplicitCorruptPathThrowsNamingPathAndCrc) {
  auto c = checkpointer();
  const auto info = c.save(7, payloadFor(7));
  ASSERT_TRUE(info.has_value());
  flipAByte(info->path);
  const auto bytes = readBytes(info->path);
  EXPECT_EQ(checkpointErrorOf([&] { c.load(info->path); }),
            "checkpoint '" + info->path + "' is corrupt: CRC-32 " +
                hex(crc32Of(bytes.data(), bytes.size())) + ", the manifest says " +
                hex(info->crc32));
}

TEST_F(CheckpointerTest, ExplicitMissingPathThrows) {
  auto c = checkpointer();
  c.save(1, payloadFor(1));
  const auto missing = (dir_ / "checkpoint-00000099.pt").string();
  EXPECT_EQ(checkpointErrorOf([&] { c.load(missing); }),
            "--resume '" + missing +
                "': no such file. Give a checkpoint-*.pt file, 'auto' "
                "(the newest in --checkpoint-dir) or 'none'");
}

TEST_F(CheckpointerTest, DirectoryUnderARegularFileThrowsNamingThePath) {
  const auto file = root_ / "not-a-directory";
  std::ofstream(file) << "x";
  const auto dir = file / "checkpoints";
  auto c = checkpointer(3, dir);
  EXPECT_EQ(checkpointErrorOf([&] { c.save(1, payloadFor(1)); }),
            "cannot create checkpoint directory '" + dir.string() + "': Not a directory");
  EXPECT_EQ(filesIn(root_), std::set<std::string>{"not-a-directory"});
}

TEST_F(CheckpointerTest, FailedWriteLeavesEarlierCheckpointsUntouched) {
  auto c = checkpointer(/*keepLast=*/2);
  c.save(1, payloadFor(1));
  c.save(2, payloadFor(2));
  const auto before = filesIn(dir_);
  const auto bytes1 = readBytes(pathOf(1)), bytes2 = readBytes(pathOf(2));
  const auto manifest1 = readBytes(pathOf(1) + ".json"), manifest2 = readBytes(pathOf(2) + ".json");

  // A directory where the temporary file of step 3 must go: open() fails (even as root).
  const auto blocker = dir_ / ".checkpoint-00000003.pt.tmp";
  fs::create_directory(blocker);
  EXPECT_EQ(checkpointErrorOf([&] { c.save(3, payloadFor(3)); }),
            "cannot create '" + blocker.string() + "': Is a directory");
  fs::remove(blocker);

  // Nothing pruned, nothing changed, nothing left behind.
  EXPECT_EQ(filesIn(dir_), before);
  EXPECT_EQ(readBytes(pathOf(1)), bytes1);
  EXPECT_EQ(readBytes(pathOf(2)), bytes2);
  EXPECT_EQ(readBytes(pathOf(1) + ".json"), manifest1);
  EXPECT_EQ(readBytes(pathOf(2) + ".json"), manifest2);
  const auto loaded = c.load("auto");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->info.step, 2);
  expectPayloadOf(2, loaded->payload);

  // The next save works again.
  c.save(3, payloadFor(3));
  EXPECT_EQ(c.load("auto")->info.step, 3);
}

TEST_F(CheckpointerTest, KeepLastBelowOneIsRejected) {
  try {
    checkpointer(/*keepLast=*/0);
    ADD_FAILURE() << "no exception";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "keep-checkpoints must be >= 1, got 0");
  }
}

// Note [Saving a step twice] in checkpointer.cpp: a finished run restarted resumes at its
// last step and saves it again. The verified checkpoint stays; nothing is rewritten, so a
// failure (here: the manifest's temporary path is blocked) cannot lose it.
TEST_F(CheckpointerTest, ResavingAnExistingStepKeepsTheVerifiedOne) {
  auto c = checkpointer();
  c.save(1, payloadFor(1));
  const auto first = c.save(2, payloadFor(2));
  fs::create_directory(dir_ / ".checkpoint-00000002.pt.json.tmp");
  const auto again = c.save(2, payloadFor(3));
  fs::remove(dir_ / ".checkpoint-00000002.pt.json.tmp");
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->crc32, first->crc32);
  const auto loaded = c.load("auto");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->info.step, 2);
  EXPECT_EQ(loaded->info.crc32, first->crc32);
}

}  // namespace
}  // namespace ddp::train
