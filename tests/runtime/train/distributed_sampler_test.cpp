// ddp::train::DistributedSampler (Note [Sampler shards]): over data set sizes, world sizes
// 1..4, shuffle and drop-last, every rank gets numSamples() indices, the shards together
// cover the data set exactly as padding or dropping allows, the order is a function of
// seed + epoch, setStart resumes inside a shard; bad arguments name the problem; and
// the indices are PyTorch's, index for index (python_sampler_reference.py).
#include "runtime/train/distributed_sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <ostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/error_of.h"
#include "tests/support/subprocess.h"

namespace ddp::train {
namespace {

using Indices = std::vector<std::int64_t>;

Indices toVector(const at::Tensor& tensor) {
  EXPECT_EQ(tensor.scalar_type(), at::kLong);
  EXPECT_EQ(tensor.dim(), 1);
  const auto* data = tensor.data_ptr<std::int64_t>();
  return Indices(data, data + tensor.numel());
}

// Every rank's indices for `epoch`, in rank order.
std::vector<Indices> allShards(std::int64_t size, int worldSize, SamplerOptions options,
                               std::int64_t epoch = 0) {
  std::vector<Indices> shards;
  for (int rank = 0; rank < worldSize; ++rank) {
    DistributedSampler sampler(size, worldSize, rank, options);
    sampler.setEpoch(epoch);
    shards.push_back(toVector(sampler.indices()));
  }
  return shards;
}

// The message of the ConfigError `f` throws, or a description of what it did.
template <typename F>
std::string invalidArgumentOf(F&& f) {
  return ddp::testing::errorOf<ConfigError>(std::forward<F>(f));
}

struct ShardCase {
  std::int64_t size;
  int worldSize;
  bool shuffle;
  bool dropLast;

  std::int64_t expectedNumSamples() const {
    return dropLast ? size / worldSize : (size + worldSize - 1) / worldSize;
  }
  friend void PrintTo(const ShardCase& c, std::ostream* os) {
    *os << "size " << c.size << ", world " << c.worldSize << (c.shuffle ? ", shuffle" : "")
        << (c.dropLast ? ", drop-last" : ", pad");
  }
};

std::vector<ShardCase> shardCases() {
  std::vector<ShardCase> cases;
  for (std::int64_t size : {1, 2, 5, 12, 13, 101}) {
    for (int worldSize = 1; worldSize <= 4; ++worldSize) {
      for (bool shuffle : {false, true}) {
        for (bool dropLast : {false, true}) {
          if (dropLast && size < worldSize) continue;  // rejected, see BadArguments
          cases.push_back({size, worldSize, shuffle, dropLast});
        }
      }
    }
  }
  return cases;
}

class ShardTest : public ::testing::TestWithParam<ShardCase> {};

TEST_P(ShardTest, EveryRankGetsNumSamplesIndicesInRange) {
  const auto& c = GetParam();
  const auto shards = allShards(c.size, c.worldSize, {c.shuffle, c.dropLast, 17});
  for (int rank = 0; rank < c.worldSize; ++rank) {
    DistributedSampler sampler(c.size, c.worldSize, rank, {c.shuffle, c.dropLast, 17});
    EXPECT_EQ(sampler.numSamples(), c.expectedNumSamples()) << "rank " << rank;
    EXPECT_EQ(sampler.totalSize(), c.expectedNumSamples() * c.worldSize) << "rank " << rank;
    ASSERT_EQ(static_cast<std::int64_t>(shards[rank].size()), c.expectedNumSamples())
        << "rank " << rank;
    for (auto index : shards[rank]) {
      EXPECT_GE(index, 0) << "rank " << rank;
      EXPECT_LT(index, c.size) << "rank " << rank;
    }
  }
}

TEST_P(ShardTest, ShardsCoverTheDataSetUpToPaddingOrTheDroppedTail) {
  const auto& c = GetParam();
  const auto shards = allShards(c.size, c.worldSize, {c.shuffle, c.dropLast, 17});
  std::map<std::int64_t, int> count;
  for (const auto& shard : shards) {
    for (auto index : shard) ++count[index];
  }
  const std::int64_t total = c.expectedNumSamples() * c.worldSize;
  std::int64_t duplicates = 0;
  for (const auto& [index, n] : count) duplicates += n - 1;

  if (c.dropLast) {
    // Exactly totalSize distinct indices; size % worldSize of them are dropped.
    EXPECT_EQ(static_cast<std::int64_t>(count.size()), total);
    EXPECT_EQ(duplicates, 0);
  } else {
    // Every index present; the only repeats are the padding, totalSize - size of them.
    EXPECT_EQ(static_cast<std::int64_t>(count.size()), c.size);
    EXPECT_EQ(duplicates, total - c.size);
  }
  if (c.dropLast || c.size % c.worldSize == 0) {
    // No padding: the shards are pairwise disjoint.
    for (int a = 0; a < c.worldSize; ++a) {
      for (int b = a + 1; b < c.worldSize; ++b) {
        std::set<std::int64_t> inA(shards[a].begin(), shards[a].end());
        for (auto index : shards[b]) {
          EXPECT_EQ(inA.count(index), 0u) << "index " << index << " on ranks " << a << " and " << b;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ShardTest, ::testing::ValuesIn(shardCases()), [](const auto& info) {
  const auto& c = info.param;
  return "size" + std::to_string(c.size) + "_world" + std::to_string(c.worldSize) +
         (c.shuffle ? "_shuffle" : "_ordered") + (c.dropLast ? "_droplast" : "_pad");
});

TEST(DistributedSamplerTest, WithoutShuffleRankRTakesEveryWorldSizeThIndexFromR) {
  for (const auto& c : shardCases()) {
    if (c.shuffle) continue;
    SCOPED_TRACE(::testing::PrintToString(c));
    const auto shards = allShards(c.size, c.worldSize, {false, c.dropLast, 17}, /*epoch=*/3);
    for (int rank = 0; rank < c.worldSize; ++rank) {
      Indices expected;
      for (std::int64_t i = 0; i < c.expectedNumSamples(); ++i) {
        expected.push_back((rank + i * c.worldSize) % c.size);  // padding repeats the head
      }
      EXPECT_EQ(shards[rank], expected) << "rank " << rank;
    }
  }
}

TEST(DistributedSamplerTest, SameSeedAndEpochGiveTheSameIndices) {
  for (int rank = 0; rank < 3; ++rank) {
    DistributedSampler a(1000, 3, rank, {true, false, 5});
    DistributedSampler b(1000, 3, rank, {true, false, 5});
    a.setEpoch(4);
    b.setEpoch(4);
    EXPECT_EQ(toVector(a.indices()), toVector(b.indices())) << "rank " << rank;
    // And calling it twice changes nothing.
    EXPECT_EQ(toVector(a.indices()), toVector(a.indices())) << "rank " << rank;
  }
}

TEST(DistributedSamplerTest, AnotherEpochOrSeedGivesAnotherOrderOfTheSameSamples) {
  auto union_ = [](const std::vector<Indices>& shards) {
    Indices all;
    for (const auto& s : shards) all.insert(all.end(), s.begin(), s.end());
    return all;
  };
  const auto epoch0 = allShards(1000, 4, {true, false, 5}, 0);
  const auto epoch1 = allShards(1000, 4, {true, false, 5}, 1);
  const auto otherSeed = allShards(1000, 4, {true, false, 6}, 0);
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_NE(epoch0[rank], epoch1[rank]) << "rank " << rank;
    EXPECT_NE(epoch0[rank], otherSeed[rank]) << "rank " << rank;
  }
  auto a = union_(epoch0), b = union_(epoch1);
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  EXPECT_EQ(a, b);
}

TEST(DistributedSamplerTest, SetStartReturnsTheTailOfTheShard) {
  for (bool dropLast : {false, true}) {
    DistributedSampler sampler(103, 4, 2, {true, dropLast, 9});
    sampler.setEpoch(7);
    const auto full = toVector(sampler.indices());
    ASSERT_EQ(static_cast<std::int64_t>(full.size()), sampler.numSamples());
    for (std::int64_t k : {std::int64_t{0}, std::int64_t{1}, std::int64_t{10},
                           sampler.numSamples() - 1, sampler.numSamples()}) {
      sampler.setStart(k);
      EXPECT_EQ(sampler.start(), k);
      EXPECT_EQ(toVector(sampler.indices()), Indices(full.begin() + k, full.end()))
          << "start " << k << (dropLast ? ", drop-last" : ", pad");
    }
    // A new epoch starts from the beginning again.
    sampler.setEpoch(8);
    EXPECT_EQ(sampler.start(), 0);
    EXPECT_EQ(sampler.epoch(), 8);
    EXPECT_EQ(static_cast<std::int64_t>(sampler.indices().numel()), sampler.numSamples());
  }
}

TEST(DistributedSamplerTest, BadArgumentsNameTheProblem) {
  EXPECT_EQ(invalidArgumentOf([] { (void)DistributedSampler(0, 2, 0); }),
            "DistributedSampler: the data set is empty (size 0)");
  EXPECT_EQ(invalidArgumentOf([] { (void)DistributedSampler(-3, 2, 0); }),
            "DistributedSampler: the data set is empty (size -3)");
  EXPECT_EQ(invalidArgumentOf([] { (void)DistributedSampler(10, 0, 0); }),
            "DistributedSampler: rank 0 of world size 0: expected 0 <= rank < world size");
  EXPECT_EQ(invalidArgumentOf([] { (void)DistributedSampler(10, 4, 4); }),
            "DistributedSampler: rank 4 of world size 4: expected 0 <= rank < world size");
  EXPECT_EQ(invalidArgumentOf([] { (void)DistributedSampler(10, 4, -1); }),
            "DistributedSampler: rank -1 of world size 4: expected 0 <= rank < world size");
  EXPECT_EQ(invalidArgumentOf([] {
              (void)DistributedSampler(3, 4, 0, {true, true, 0});
            }),
            "DistributedSampler: 3 samples cannot be split over 4 ranks with drop-last "
            "(every rank would get none); use padding or fewer ranks");

  DistributedSampler sampler(10, 3, 1);  // 4 samples per rank
  sampler.setEpoch(2);
  EXPECT_EQ(invalidArgumentOf([&] { sampler.setStart(5); }),
            "DistributedSampler: start 5 is outside this rank's shard of 4 samples (epoch 2)");
  EXPECT_EQ(invalidArgumentOf([&] { sampler.setStart(-1); }),
            "DistributedSampler: start -1 is outside this rank's shard of 4 samples (epoch 2)");
  EXPECT_EQ(sampler.start(), 0);  // unchanged by the rejected calls
}

// --- Against PyTorch ----------------------------------------------------------------------

struct ReferenceCase {
  std::int64_t size;
  int worldSize;
  std::uint64_t seed;
  std::int64_t epoch;
  bool shuffle;
  bool dropLast;
};

TEST(DistributedSamplerTest, IndicesEqualPyTorchDistributedSampler) {
  const std::vector<ReferenceCase> cases = {
      {12, 4, 42, 5, true, false},  // divides evenly
      {10, 3, 7, 2, true, false},   // padding 2 <= size: the head once
      {10, 3, 0, 0, true, true},    // drop-last
      {1, 4, 0, 0, true, false},    // padding 3 > size: the head repeated
      {3, 4, 11, 1, true, false},
      {5, 4, 1, 0, false, false},  // no shuffle, padding
      {13, 4, 1, 0, false, true},  // no shuffle, drop-last
      {1001, 3, 123, 9, true, false},
      {50000, 4, 2024, 3, true, true},
      {777, 2, 1ull << 40, 1, true, false},  // a seed beyond 32 bits
  };
  std::vector<std::string> argv = {DDPRUN_PYTHON, PYTHON_SAMPLER_REFERENCE};
  for (const auto& c : cases) {
    argv.push_back(std::to_string(c.size) + "," + std::to_string(c.worldSize) + "," +
                   std::to_string(c.seed) + "," + std::to_string(c.epoch) + "," +
                   (c.shuffle ? "1" : "0") + "," + (c.dropLast ? "1" : "0"));
  }
  ddp::testing::ChildProcess python(argv, {{"OMP_NUM_THREADS", "1"}});
  const auto result = python.wait(std::chrono::seconds(120));
  ASSERT_EQ(result.exitCode, 0) << "signal " << result.termSignal << ": " << result.output;

  // "case <i> rank <r>: <indices>" lines; anything else (warnings) is ignored.
  std::map<std::pair<int, int>, Indices> theirs;
  std::istringstream lines(result.output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream in(line);
    std::string word, rankWord;
    int i = -1, r = -1;
    if (!(in >> word >> i >> rankWord >> r) || word != "case" || rankWord != "rank") continue;
    in.ignore(1);  // ':'
    Indices indices;
    for (std::int64_t index; in >> index;) indices.push_back(index);
    theirs[{i, r}] = indices;
  }

  for (int i = 0; i < static_cast<int>(cases.size()); ++i) {
    const auto& c = cases[i];
    for (int rank = 0; rank < c.worldSize; ++rank) {
      DistributedSampler sampler(c.size, c.worldSize, rank, {c.shuffle, c.dropLast, c.seed});
      sampler.setEpoch(c.epoch);
      const auto ours = toVector(sampler.indices());
      ASSERT_EQ(theirs.count({i, rank}), 1u)
          << "no line for case " << i << " rank " << rank << " in:\n"
          << result.output.substr(0, 2000);
      const auto& reference = theirs[{i, rank}];
      std::int64_t firstDifference = -1;
      for (std::size_t j = 0; j < std::min(ours.size(), reference.size()); ++j) {
        if (ours[j] != reference[j]) {
          firstDifference = static_cast<std::int64_t>(j);
          break;
        }
      }
      EXPECT_EQ(ours.size(), reference.size()) << "case " << i << " rank " << rank;
      EXPECT_EQ(firstDifference, -1)
          << "case " << i << " (size " << c.size << ", world " << c.worldSize << ", seed " << c.seed
          << ", epoch " << c.epoch << ") rank " << rank << ": ours "
          << (firstDifference >= 0 ? ours[firstDifference] : 0) << ", PyTorch's "
          << (firstDifference >= 0 ? reference[firstDifference] : 0);
    }
  }
}

}  // namespace
}  // namespace ddp::train
