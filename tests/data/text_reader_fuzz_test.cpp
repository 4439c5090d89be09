// The text reader, through loadDataset (the split into windows included), under random
// files and every kind of blockSize and testFraction (tests/support/fuzz.h): every file is
// read or is a DataError, never a crash, a hang or an exception of another type.
#include "data/text_reader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <limits>

#include "data/dataset.h"
#include "tests/data/data_test_files.h"
#include "tests/support/fuzz.h"

namespace ddp::data {
namespace {

namespace fuzz = ddp::testing::fuzz;

TEST(TextReaderFuzzTest, EveryFileIsReadOrIsADataError) {
  const testing::TempDir dir("text_reader_fuzz_test");
  const std::string opticks =
      "OPTICKS: OR, A TREATISE OF THE Reflections, Refractions, Inflections and Colours OF "
      "LIGHT.\nThe Design in this Book is not to explain the Properties of Light by "
      "Hypotheses, but to propose and prove them by Reason and Experiments.\n";
  fuzz::Target target{"text",
                      {opticks, testing::gzipped(opticks), "ab", std::string("\xff\xfe\0x", 4)}};
  target.mutators = {[](std::string& s, fuzz::Rng&) { s = testing::gzipped(s); }};
  target.parse = [&dir](const std::string& input) {
    // ddptrain takes any blockSize >= 1 and any testFraction in (0, 1): each input gets
    // one of the edges, chosen by its length.
    static const std::int64_t kBlockSizes[] = {
        1, 2, 16, 64, 100000, std::int64_t{1} << 53, std::numeric_limits<std::int64_t>::max()};
    static const double kFractions[] = {0.2, 0.5, 0.999999, 1e-6, 1e-17, 4.9e-324};
    DatasetOptions options;
    options.kind = "text";
    options.blockSize = kBlockSizes[input.size() % std::size(kBlockSizes)];
    options.testFraction = kFractions[input.size() / 7 % std::size(kFractions)];
    options.path = fuzz::writeInputFile(dir.path(""), "input", input);
    loadDataset(options);
  };
  fuzz::runAndExpectNoFindings(target, 4000);
}

}  // namespace
}  // namespace ddp::data
