// ddp::train::Checkpointer in a single-process gloo group (Note [Checkpoint files]): a
// payload dict survives save and load; "auto" takes the newest valid checkpoint and
// falls back past a corrupt one; keepLast prunes files and manifests; a .pt without a
// manifest is ignored; explicit paths must exist and match their manifest; a failed
// write names the path and leaves the earlier checkpoints as they were; no temporary
// files remain.
#include "runtime/train/checkpointer.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
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
#include <thread>
#include <vector>

#include "runtime/distributed.h"
#include "tests/support/error_of.h"
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

template <typename F>
std::string checkpointErrorOf(F&& f) {
  return ddp::testing::errorOf<CheckpointError>(std::forward<F>(f));
}
template <typename F>
std::string usageErrorOf(F&& f) {
  return ddp::testing::errorOf<CheckpointUsageError>(std::forward<F>(f));
}

const std::string kResumeHint =
    "Give a checkpoint-*.pt file that has its .json manifest beside it, 'auto' (the newest in "
    "--checkpoint-dir) or 'none'";

// Every file under `dir`, relative to it.
std::set<std::string> treeOf(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) names.insert(fs::relative(entry.path(), dir).string());
  }
  return names;
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
    return Checkpointer({.dir = dir.value_or(dir_).string(),
                         .keepLast = keepLast,
                         .directoryTries = 2,
                         .directoryRetry = std::chrono::milliseconds(10)},
                        dist_->group, dist_->device);
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
  EXPECT_EQ(usageErrorOf([&] { c.load(pathOf(9)); }),
            "--resume: checkpoint '" + pathOf(9) + "' has no manifest '" + pathOf(9) +
                ".json', so its checksum cannot be verified (an unfinished write, or a file "
                "copied without it). " +
                kResumeHint);
  // "auto" passes over it, and sets it aside: it is newer than the step resumed.
  const auto loaded = c.load("auto");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->info.step, 5);
  EXPECT_FALSE(fs::exists(pathOf(9)));
}

TEST_F(CheckpointerTest, NoneAndAnEmptyDirectoryLoadNothing) {
  auto c = checkpointer();
  EXPECT_FALSE(c.load("auto").has_value()) << "directory not created yet";
  EXPECT_TRUE(c.list().empty());
  c.save(1, payloadFor(1));
  EXPECT_FALSE(c.load("none").has_value());
}

// Named explicitly, a bad file is read again by every restart: CheckpointUsageError,
// permanent (exit 2), not the retryable CheckpointError.
TEST_F(CheckpointerTest, ExplicitCorruptPathThrowsNamingPathAndCrc) {
  auto c = checkpointer();
  const auto info = c.save(7, payloadFor(7));
  ASSERT_TRUE(info.has_value());
  flipAByte(info->path);
  const auto bytes = readBytes(info->path);
  EXPECT_EQ(usageErrorOf([&] { c.load(info->path); }),
            "--resume: checkpoint '" + info->path + "' is corrupt: CRC-32 " +
                hex(crc32Of(bytes.data(), bytes.size())) + ", the manifest says " +
                hex(info->crc32) + ". " + kResumeHint);
}

TEST_F(CheckpointerTest, ExplicitMissingPathThrows) {
  auto c = checkpointer();
  c.save(1, payloadFor(1));
  const auto missing = (dir_ / "checkpoint-00000099.pt").string();
  EXPECT_EQ(usageErrorOf([&] { c.load(missing); }),
            "--resume '" + missing + "': no such file. " + kResumeHint);
}

TEST_F(CheckpointerTest, ExplicitPathThatIsNotACheckpointThrows) {
  auto c = checkpointer();
  EXPECT_EQ(usageErrorOf([&] { c.load(root_.string()); }),
            "--resume '" + root_.string() + "': not a regular file. " + kResumeHint);
  const auto text = root_ / "notes.txt";
  std::ofstream(text) << "not a checkpoint";
  EXPECT_EQ(usageErrorOf([&] { c.load(text.string()); }),
            "--resume: checkpoint '" + text.string() + "' has no manifest '" + text.string() +
                ".json', so its checksum cannot be verified (an unfinished write, or a file "
                "copied without it). " +
                kResumeHint);
}

// A file in the way cannot pass: no retries, a permanent error at load (before training).
TEST_F(CheckpointerTest, DirectoryUnderARegularFileThrowsNamingThePath) {
  const auto file = root_ / "not-a-directory";
  std::ofstream(file) << "x";
  const auto dir = file / "checkpoints";
  auto c = checkpointer(3, dir);
  const auto expected = "checkpoint directory '" + dir.string() +
                        "': cannot create it: Not a directory. Expected a directory rank 0 can "
                        "write; give another --checkpoint-dir, or mount the volume read-write";
  EXPECT_EQ(usageErrorOf([&] { c.load("auto"); }), expected);
  EXPECT_EQ(usageErrorOf([&] { c.save(1, payloadFor(1)); }), expected);
  EXPECT_EQ(usageErrorOf([&] { checkpointer(3, file).load("auto"); }),
            "checkpoint directory '" + file.string() +
                "': it is not a directory. Expected a directory rank 0 can write; give another "
                "--checkpoint-dir, or mount the volume read-write");
  EXPECT_EQ(filesIn(root_), std::set<std::string>{"not-a-directory"});
}

// A directory that cannot be created may be a volume still being mounted: tried
// directoryTries times, then permanent. (/proc refuses new directories, even to root.)
TEST_F(CheckpointerTest, UncreatableDirectoryIsRetriedThenPermanent) {
  const fs::path dir = "/proc/ddprun-checkpointer-test";
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(usageErrorOf([&] { checkpointer(3, dir).load("auto"); }),
            "checkpoint directory '" + dir.string() +
                "': cannot create it: No such file or directory. Expected a directory rank 0 "
                "can write; give another --checkpoint-dir, or mount the volume read-write");
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(10));
}

// Note [Who may write the checkpoint directory]: on NFS the pod's fsGroup is not applied and
// uid 1000 meets a root-owned /checkpoints. The error names who needs what. As root, the test
// takes uid 65534's effective ids for the call (file checks use them).
TEST_F(CheckpointerTest, APermissionDeniedNamesTheUidAndTheDirectoryThatRefused) {
  const fs::path locked = root_ / "export";
  fs::create_directories(locked);
  fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                              fs::perms::group_exec | fs::perms::others_read |
                              fs::perms::others_exec);
  const bool root = ::geteuid() == 0;
  const uid_t uid = root ? 65534 : ::geteuid();
  const gid_t gid = root ? 65534 : ::getegid();
  struct stat owner {};
  ASSERT_EQ(::stat(locked.c_str(), &owner), 0);
  if (root) {
    ASSERT_EQ(::setegid(gid), 0);
    ASSERT_EQ(::seteuid(uid), 0);
  }
  const auto error = usageErrorOf([&] { checkpointer(3, locked / "job-a").load("auto"); });
  if (root) {
    ASSERT_EQ(::seteuid(0), 0);
    ASSERT_EQ(::setegid(0), 0);
  }
  EXPECT_NE(error.find(fmt::format("cannot create it: Permission denied (this process runs as uid "
                                   "{} gid {} and needs write and search permission on '{}', "
                                   "which is owned by uid {} gid {} with mode 0555;",
                                   uid, gid, locked.string(), owner.st_uid, owner.st_gid)),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("k8s/README.md \"Storage\""), std::string::npos) << error;
  fs::permissions(locked, fs::perms::owner_all);
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

// Note [One run per directory]: README's way to start over (--resume none) in a
// directory that holds an earlier run. Before, the save of step 4 was "kept (already
// saved)": the old run's file stayed, retention pruned the new run's others, and a
// later "auto" continued the old run.
TEST_F(CheckpointerTest, FreshStartMovesTheEarlierRunAsideAndNeverKeepsItsFiles) {
  {
    auto old = checkpointer(/*keepLast=*/5);
    for (std::int64_t step : {2, 4, 6}) old.save(step, payloadFor(step));
  }
  const auto oldBytes = readBytes(pathOf(4));
  auto fresh = checkpointer(/*keepLast=*/5);
  EXPECT_FALSE(fresh.load("none").has_value());
  fresh.save(2, payloadFor(20));
  const auto saved = fresh.save(4, payloadFor(40));
  ASSERT_TRUE(saved.has_value());
  EXPECT_NE(readBytes(pathOf(4)), oldBytes);

  const auto loaded = checkpointer(5).load("auto");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->info.step, 4);
  expectPayloadOf(40, loaded->payload);

  // Nothing of the earlier run was lost: it is in superseded/<time>/.
  const auto tree = treeOf(dir_);
  int aside = 0;
  for (const auto& name : tree) {
    if (name.starts_with("superseded/")) ++aside;
  }
  EXPECT_EQ(aside, 6) << ::testing::PrintToString(tree);
  const auto asideDir = fs::directory_iterator(dir_ / "superseded")->path();
  EXPECT_EQ(readBytes(asideDir / "checkpoint-00000004.pt"), oldBytes);
  EXPECT_EQ(filesIn(dir_),
            (std::set<std::string>{"checkpoint-00000002.pt", "checkpoint-00000002.pt.json",
                                   "checkpoint-00000004.pt", "checkpoint-00000004.pt.json",
                                   "superseded"}));
}

// A program that saves without loading starts fresh too.
TEST_F(CheckpointerTest, SavingWithoutLoadingSetsAnEarlierRunAside) {
  checkpointer().save(6, payloadFor(6));
  auto c = checkpointer();
  c.save(2, payloadFor(2));
  EXPECT_FALSE(fs::exists(pathOf(6)));
  EXPECT_EQ(checkpointer().load("auto")->info.step, 2);
}

// Before, with keepLast 1 and a corrupt checkpoint at a higher step, every new save was
// logged "saved" and then deleted by retention: the run ended with only the corrupt file.
TEST_F(CheckpointerTest, KeepLastOneWithACorruptNewerCheckpointKeepsEveryNewSave) {
  {
    auto first = checkpointer(/*keepLast=*/3);
    first.save(2, payloadFor(2));
    first.save(10, payloadFor(10));
  }
  flipAByte(pathOf(10));
  auto c = checkpointer(/*keepLast=*/1);
  ASSERT_EQ(c.load("auto")->info.step, 2);  // falls back past the corrupt one
  c.save(3, payloadFor(3));
  c.save(4, payloadFor(4));
  const auto loaded = checkpointer(1).load("auto");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->info.step, 4);
  expectPayloadOf(4, loaded->payload);
  EXPECT_FALSE(fs::exists(pathOf(2)));
  EXPECT_FALSE(fs::exists(pathOf(3)));
}

// Retention counts only checkpoints whose manifest parses and whose size matches: a
// truncated one never pushes a good one out.
TEST_F(CheckpointerTest, RetentionCountsOnlyValidCheckpoints) {
  auto c = checkpointer(/*keepLast=*/2);
  c.save(1, payloadFor(1));
  c.save(2, payloadFor(2));
  c.save(3, payloadFor(3));  // removes 1
  fs::resize_file(pathOf(3), 100);
  c.save(4, payloadFor(4));
  EXPECT_TRUE(fs::exists(pathOf(2))) << "the newest valid one before 4 was removed";
  EXPECT_TRUE(fs::exists(pathOf(4)));
  fs::remove(pathOf(4));
  fs::remove(pathOf(4) + ".json");
  const auto loaded = checkpointer(2).load("auto");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->info.step, 2);
}

// A crash between open() and rename() leaves a hidden temporary: removed at load.
TEST_F(CheckpointerTest, StaleTemporariesAreRemovedAtLoad) {
  auto c = checkpointer();
  c.save(1, payloadFor(1));
  writeBytes(dir_ / ".checkpoint-00000002.pt.tmp", std::vector<char>(1000, 'x'));
  writeBytes(dir_ / ".checkpoint-00000002.pt.json.tmp", std::vector<char>(10, 'x'));
  writeBytes(dir_ / ".run-journal.jsonl.tmp", std::vector<char>(10, 'x'));
  writeBytes(dir_ / "notes.tmp", std::vector<char>(10, 'x'));  // not hidden: not ours
  EXPECT_EQ(checkpointer().load("auto")->info.step, 1);
  EXPECT_EQ(filesIn(dir_), (std::set<std::string>{"checkpoint-00000001.pt",
                                                  "checkpoint-00000001.pt.json", "notes.tmp"}));
}

// 0640 whatever the umask (0644 before); another mode when asked.
TEST_F(CheckpointerTest, FilesAreWrittenWithTheConfiguredMode) {
  const auto previous = ::umask(0);
  checkpointer().save(1, payloadFor(1));
  Checkpointer({.dir = (root_ / "private").string(), .fileMode = 0600}, dist_->group, dist_->device)
      .save(1, payloadFor(1));
  ::umask(previous);
  auto mode = [](const fs::path& p) { return fs::status(p).permissions() & fs::perms::all; };
  const auto expected = fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read;
  EXPECT_EQ(mode(pathOf(1)), expected);
  EXPECT_EQ(mode(pathOf(1) + ".json"), expected);
  EXPECT_EQ(mode(root_ / "private" / "checkpoint-00000001.pt"),
            fs::perms::owner_read | fs::perms::owner_write);
}

// Note [Completion marker]: written for the final checkpoint, read back; moved aside with
// the run by a fresh start; a malformed marker is ignored.
TEST_F(CheckpointerTest, CompletionMarkerRoundTripsAndLeavesWithItsRun) {
  auto c = checkpointer();
  const auto final = c.save(8, payloadFor(8));
  c.markComplete(*final, "model: mlp\n");
  const auto marker = readCompletionMarker(dir_.string());
  ASSERT_TRUE(marker.has_value());
  EXPECT_EQ(marker->step, 8);
  EXPECT_EQ(marker->checkpoint, "checkpoint-00000008.pt");
  EXPECT_EQ(marker->configText, "model: mlp\n");
  EXPECT_FALSE(readCompletionMarker((root_ / "elsewhere").string()).has_value());

  EXPECT_EQ(checkpointer().load("auto")->info.step, 8);  // resuming the final one keeps it
  EXPECT_TRUE(readCompletionMarker(dir_.string()).has_value());
  checkpointer().load("none");
  EXPECT_FALSE(readCompletionMarker(dir_.string()).has_value());

  std::ofstream(dir_ / kCompletionMarkerName) << "{not json";
  EXPECT_FALSE(readCompletionMarker(dir_.string()).has_value());
}

// Names with more digits than int64 holds are not ours: ignored, not std::out_of_range.
TEST_F(CheckpointerTest, AnOverlongStepNumberIsIgnored) {
  auto c = checkpointer();
  c.save(1, payloadFor(1));
  std::ofstream(dir_ / "checkpoint-99999999999999999999999.pt.json") << "{}";
  EXPECT_EQ(c.list().size(), 1u);
  EXPECT_EQ(checkpointer().load("auto")->info.step, 1);
}

// Note [Asynchronous saves] -------------------------------------------------------------

TEST_F(CheckpointerTest, AnAsynchronousSaveWritesTheFileASynchronousSaveWrites) {
  auto c = checkpointer(/*keepLast=*/5);
  const auto synchronous = c.save(1, payloadFor(4));
  c.saveAsync(2, payloadFor(4));
  EXPECT_TRUE(c.saving());
  const auto background = c.finishSave();
  ASSERT_TRUE(background.has_value());
  EXPECT_FALSE(c.saving());
  EXPECT_EQ(background->step, 2);
  EXPECT_EQ(background->path, pathOf(2));
  EXPECT_EQ(readBytes(pathOf(2)), readBytes(pathOf(1)));  // byte for byte
  EXPECT_EQ(background->crc32, synchronous->crc32);
  EXPECT_GT(background->total.count(), 0);
  EXPECT_LE(background->blocked, background->total);
  const auto loaded = c.load("auto");
  EXPECT_EQ(loaded->info.step, 2);
  expectPayloadOf(4, loaded->payload);
}

// The payload holds the live tensors: what the file gets is their state when saveAsync
// returned, whatever training does to them after.
TEST_F(CheckpointerTest, TheSnapshotIsTakenBeforeSaveAsyncReturns) {
  auto c = checkpointer();
  const auto live = torch::arange(1 << 20, torch::kFloat32);
  c10::impl::GenericDict payload(c10::StringType::get(), c10::AnyType::get());
  payload.insert("weights", live);
  c.saveAsync(1, payload);
  live.fill_(-1);
  c.finishSave();
  const auto loaded = c.load("auto");
  EXPECT_TRUE(torch::equal(loaded->payload.toGenericDict().at("weights").toTensor(),
                           torch::arange(1 << 20, torch::kFloat32)));
}

// Buffers reserved ahead (as the Trainer does after its first step) hold the next
// snapshot: what it copies, not what they were reserved with (zeros).
TEST_F(CheckpointerTest, AReservedSnapshotSavesTheStateAtTheSave) {
  auto c = checkpointer();
  c.reserveSnapshot(payloadFor(1));
  c.saveAsync(2, payloadFor(2));  // waits for the reservation, then copies into its buffers
  EXPECT_EQ(c.finishSave()->step, 2);
  expectPayloadOf(2, c.load("auto")->payload);
  c.reserveSnapshot(payloadFor(3));
  c.finishReserving();
  c.save(3, payloadFor(3));
  expectPayloadOf(3, c.load("auto")->payload);
}

TEST_F(CheckpointerTest, ASecondRequestWaitsForTheSaveInFlightAndBothAreKept) {
  auto c = checkpointer(/*keepLast=*/3);
  c.saveAsync(1, payloadFor(1));
  c.saveAsync(2, payloadFor(2));  // waits for step 1's write, then snapshots
  const auto second = c.finishSave();
  EXPECT_EQ(second->step, 2);
  EXPECT_FALSE(c.finishSave().has_value());  // nothing in flight any more
  EXPECT_EQ(filesIn(dir_),
            (std::set<std::string>{fs::path(pathOf(1)).filename().string(),
                                   fs::path(pathOf(1)).filename().string() + ".json",
                                   fs::path(pathOf(2)).filename().string(),
                                   fs::path(pathOf(2)).filename().string() + ".json"}));
  c.save(3, payloadFor(3));  // a synchronous save after a background one
  EXPECT_EQ(c.list().size(), 3u);
}

TEST_F(CheckpointerTest, PollSaveNeverWaitsAndReportsAFinishedSaveOnce) {
  auto c = checkpointer();
  EXPECT_FALSE(c.pollSave().has_value());  // none in flight
  c.saveAsync(5, payloadFor(5));
  std::optional<CheckpointInfo> finished;
  for (int tries = 0; tries < 600 && !finished; ++tries) {
    finished = c.pollSave();
    if (!finished) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(finished.has_value()) << "the write did not finish within 30 s";
  EXPECT_EQ(finished->step, 5);
  EXPECT_FALSE(c.pollSave().has_value());
  EXPECT_FALSE(c.saving());
}

TEST_F(CheckpointerTest, ABackgroundWriteThatFailsIsRethrownAndLeavesTheEarlierCheckpoint) {
  auto c = checkpointer(/*keepLast=*/2);
  c.save(1, payloadFor(1));
  const auto bytes1 = readBytes(pathOf(1));
  const auto blocker = dir_ / ".checkpoint-00000002.pt.tmp";
  fs::create_directory(blocker);
  c.saveAsync(2, payloadFor(2));  // returns: the failure is the writer thread's
  EXPECT_EQ(checkpointErrorOf([&] { c.finishSave(); }),
            "cannot create '" + blocker.string() + "': Is a directory");
  EXPECT_FALSE(c.saving());
  fs::remove(blocker);
  EXPECT_EQ(readBytes(pathOf(1)), bytes1);
  EXPECT_EQ(c.load("auto")->info.step, 1);
  // ... and from the next request when nobody collected it.
  fs::create_directory(blocker);
  c.saveAsync(2, payloadFor(2));
  EXPECT_EQ(checkpointErrorOf([&] { c.saveAsync(3, payloadFor(3)); }),
            "cannot create '" + blocker.string() + "': Is a directory");
  fs::remove(blocker);
  c.saveAsync(3, payloadFor(3));
  EXPECT_EQ(c.finishSave()->step, 3);
}

TEST_F(CheckpointerTest, DestroyingTheCheckpointerFinishesTheSaveInFlight) {
  {
    auto c = checkpointer();
    c.saveAsync(7, payloadFor(7));
  }
  EXPECT_TRUE(fs::exists(pathOf(7) + ".json"));
  EXPECT_EQ(checkpointer().load("auto")->info.step, 7);
}

// A write larger than the writer's gathering buffer and its writeback chunk, in pieces of
// every size, reaches the file whole, with the CRC-32 of all its bytes.
TEST_F(CheckpointerTest, AStreamedFileHoldsEveryPieceInOrder) {
  fs::create_directories(dir_);
  const auto path = dir_ / "streamed.bin";
  std::vector<char> expected;
  {
    AtomicFileWriter writer(path, 0640);
    for (std::size_t size : {std::size_t{1}, std::size_t{300}, std::size_t{256 << 10},
                             std::size_t{7}, std::size_t{(64 << 20) + 3}, std::size_t{100}}) {
      std::vector<char> piece(size);
      for (std::size_t i = 0; i < size; ++i) piece[i] = static_cast<char>((i * 31 + size) & 0xff);
      writer.write(piece.data(), piece.size());
      expected.insert(expected.end(), piece.begin(), piece.end());
    }
    EXPECT_FALSE(fs::exists(path));  // not before commit
    writer.commit();
    EXPECT_EQ(writer.bytes(), expected.size());
    EXPECT_EQ(writer.crc32(), crc32Of(expected.data(), expected.size()));
  }
  EXPECT_EQ(readBytes(path), expected);
  EXPECT_EQ(filesIn(dir_), std::set<std::string>{"streamed.bin"});
}

TEST_F(CheckpointerTest, AnUncommittedStreamedFileLeavesNothing) {
  fs::create_directories(dir_);
  {
    AtomicFileWriter writer(dir_ / "abandoned.bin", 0640);
    writer.write("partial", 7);
  }
  EXPECT_TRUE(filesIn(dir_).empty());
}

TEST_F(CheckpointerTest, ASnapshotOfCudaTensorsIsWrittenAsHostTensors) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device visible: torch::cuda::is_available() is false";
  }
  auto c = checkpointer();
  const auto live = torch::arange(1000, torch::kFloat32).cuda();
  c10::impl::GenericDict payload(c10::StringType::get(), c10::AnyType::get());
  payload.insert("weights", live);
  c.saveAsync(1, payload);
  live.fill_(-1);
  c.finishSave();
  c.save(2, payload);  // synchronous: the device tensor copied too
  const auto first = c.load(pathOf(1))->payload.toGenericDict().at("weights").toTensor();
  EXPECT_TRUE(first.is_cpu());
  EXPECT_TRUE(torch::equal(first, torch::arange(1000, torch::kFloat32)));
  const auto second = c.load("auto")->payload.toGenericDict().at("weights").toTensor();
  EXPECT_TRUE(torch::equal(second, torch::full({1000}, -1.0f)));
}

}  // namespace
}  // namespace ddp::train
