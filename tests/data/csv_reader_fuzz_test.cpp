// The CSV reader, through loadDataset (split and standardization included), under random
// files (tests/support/fuzz.h): every file is read or is a DataError, never a crash, a
// hang or an exception of another type.
#include "data/csv_reader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "data/dataset.h"
#include "tests/data/data_test_files.h"
#include "tests/support/fuzz.h"

namespace ddp::data {
namespace {

namespace fuzz = ddp::testing::fuzz;

TEST(CsvReaderFuzzTest, EveryFileIsReadOrIsADataError) {
  const testing::TempDir dir("csv_reader_fuzz_test");
  std::vector<std::string> corpus = {
      // sklearn's header: n_samples, n_features, class names
      "6,2,a,b\n1.0,2.0,0\n3,4,1\n5e-1,-2,0\n1,1,1\n0,0,0\n2,2,1\n",
      // a header of names, CR LF, a blank line
      "x,y,label\r\n1,2,0\r\n\r\n3,4,1\r\n-0.5,1e3,2\r\n",
      // no header (digits.csv.gz's layout)
      "0.1,0.2,0.3,2\n0.4,0.5,0.6,1\n0.7,0.8,0.9,0\n1,1,1,0\n",
  };
  for (std::size_t i = 0, n = corpus.size(); i < n; ++i) {
    corpus.push_back(testing::gzipped(corpus[i]));
  }
  fuzz::Target target{"csv", corpus, {",", "\n", "\r\n", "e", "-", ".", " ", "\"1\"", "nan"}};
  target.mutators = {[](std::string& s, fuzz::Rng&) { s = testing::gzipped(s); }};
  target.parse = [&dir](const std::string& input) {
    DatasetOptions options;
    options.kind = "csv";
    options.path = fuzz::writeInputFile(dir.path(""), "input", input);
    loadDataset(options);
  };
  fuzz::runAndExpectNoFindings(target, 6000);
}

}  // namespace
}  // namespace ddp::data
