#include "data/csv_reader.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <torch/torch.h>

#include "tests/data/data_test_files.h"

namespace ddp::data {
namespace {

using testing::expectDataError;
using testing::kSklearnDataDir;
using testing::TempDir;

struct SklearnFile {
  std::string name;
  std::int64_t rows;
  std::int64_t features;
  std::int64_t classes;
  std::vector<std::int64_t> perClass;  // rows of each class, as sklearn documents them
};

void PrintTo(const SklearnFile& file, std::ostream* out) { *out << file.name; }

class SklearnFileTest : public ::testing::TestWithParam<SklearnFile> {};

TEST_P(SklearnFileTest, HasTheDocumentedShape) {
  const auto& expected = GetParam();
  const auto path = kSklearnDataDir + "/" + expected.name;
  DDPRUN_SKIP_UNLESS_EXISTS(path, "python3-sklearn");
  const auto table = readCsvFile(path);
  EXPECT_EQ(table.features.sizes(), (std::vector<std::int64_t>{expected.rows, expected.features}));
  EXPECT_EQ(table.features.scalar_type(), torch::kFloat32);
  EXPECT_EQ(table.labels.sizes(), (std::vector<std::int64_t>{expected.rows}));
  EXPECT_EQ(table.numClasses, expected.classes);
  EXPECT_TRUE(torch::equal(torch::bincount(table.labels), torch::tensor(expected.perClass)))
      << torch::bincount(table.labels);
}

INSTANTIATE_TEST_SUITE_P(
    RealFiles, SklearnFileTest,
    ::testing::Values(
        SklearnFile{"iris.csv", 150, 4, 3, {50, 50, 50}},
        SklearnFile{"wine_data.csv", 178, 13, 3, {59, 71, 48}},
        SklearnFile{"breast_cancer.csv", 569, 30, 2, {212, 357}},
        SklearnFile{
            "digits.csv.gz", 1797, 64, 10, {178, 182, 177, 183, 181, 182, 181, 179, 174, 180}}),
    [](const auto& info) { return info.param.name.substr(0, info.param.name.find('.')); });

TEST(SklearnIrisTest, ReadsHeaderNamesAndValues) {
  const auto path = kSklearnDataDir + "/iris.csv";
  DDPRUN_SKIP_UNLESS_EXISTS(path, "python3-sklearn");
  const auto table = readCsvFile(path);
  EXPECT_EQ(table.classNames, (std::vector<std::string>{"setosa", "versicolor", "virginica"}));
  // The first row: 5.1,3.5,1.4,0.2,0
  EXPECT_TRUE(torch::equal(table.features[0], torch::tensor({5.1f, 3.5f, 1.4f, 0.2f})));
  EXPECT_EQ(table.labels[0].item<std::int64_t>(), 0);
  EXPECT_EQ(table.labels[149].item<std::int64_t>(), 2);
}

class CsvReaderTest : public ::testing::Test {
 protected:
  TempDir dir_{"csv_reader_test"};
};

TEST_F(CsvReaderTest, PlainAndGzipReadAlike) {
  const std::string content = "3,2,no,yes\n1.5,-2,0\n0.25,1e3,1\n7,8,1\n";
  for (bool gzip : {false, true}) {
    const auto table = readCsvFile(dir_.write(gzip ? "t.csv.gz" : "t.csv", content, gzip));
    const auto expected = torch::tensor({1.5f, -2.0f, 0.25f, 1000.0f, 7.0f, 8.0f}).view({3, 2});
    EXPECT_TRUE(torch::equal(table.features, expected));
    EXPECT_TRUE(torch::equal(table.labels, torch::tensor({0, 1, 1}, torch::kInt64)));
    EXPECT_EQ(table.classNames, (std::vector<std::string>{"no", "yes"}));
    EXPECT_EQ(table.numClasses, 2);
  }
}

TEST_F(CsvReaderTest, AcceptsNoHeaderANamesHeaderCrLfAndBlankLines) {
  const auto plain = readCsvFile(dir_.write("plain.csv", "1,2,0\n3,4,2\n"));
  EXPECT_EQ(plain.features.sizes(), (std::vector<std::int64_t>{2, 2}));
  EXPECT_TRUE(plain.classNames.empty());
  EXPECT_EQ(plain.numClasses, 3);  // max label + 1, even with no row of class 1

  const auto named = readCsvFile(
      dir_.write("named.csv", "width, height ,label\r\n\r\n1,2,0\r\n  \n3, 4 ,1.0\r\n\n"));
  EXPECT_TRUE(torch::equal(named.features, torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({2, 2})));
  EXPECT_TRUE(torch::equal(named.labels, torch::tensor({0, 1}, torch::kInt64)));
}

TEST_F(CsvReaderTest, BadFilesSayWhereAndWhat) {
  const auto header = std::string("4,2,a,b\n");
  auto path = dir_.write("empty.csv", "");
  expectDataError([&] { readCsvFile(path); }, {path, "empty file"});
  path = dir_.write("blank.csv", "\n \n");
  expectDataError([&] { readCsvFile(path); }, {path, "blank file"});
  path = dir_.write("binary.csv", std::string("\0\0\x08\x01\0\0\0\x03\x01\x02\x03", 11));
  expectDataError([&] { readCsvFile(path); },
                  {path, "offset 0: expected CSV text, found a NUL byte"});
  path = dir_.write("only_header.csv", header);
  expectDataError([&] { readCsvFile(path); }, {path, "line 1 is a header, but no data rows"});

  path = dir_.write("non_numeric.csv", header + "1,2,0\n3,abc,1\n");
  expectDataError([&] { readCsvFile(path); },
                  {path + ": line 3, column 2: expected a number (a feature), found \"abc\""});
  path = dir_.write("empty_cell.csv", "1,,0\n");
  expectDataError([&] { readCsvFile(path); }, {"line 1, column 2: expected a number", "\"\""});
  path = dir_.write("nan.csv", "1,2,0\nnan,2,0\n");
  expectDataError([&] { readCsvFile(path); }, {"line 2, column 1: expected a number", "\"nan\""});
  path = dir_.write("trailing.csv", "1,2x,0\n");
  expectDataError([&] { readCsvFile(path); }, {"line 1, column 2", "\"2x\""});

  path = dir_.write("columns.csv", "1,2,0\n3,4,1\n5,6,7,1\n");
  expectDataError([&] { readCsvFile(path); },
                  {path + ": line 3: expected 3 columns (2 features and the label, as on line 1), "
                          "found 4"});
  // A plain file cut inside its last row.
  path = dir_.write("truncated.csv", header + "1,2,0\n3,4,1\n5,6,1\n7,");
  expectDataError([&] { readCsvFile(path); }, {"line 5: expected 3 columns", "found 2"});
  path = dir_.write("one_column.csv", "1\n2\n");
  expectDataError([&] { readCsvFile(path); }, {"line 1, column 1: expected at least 2 columns"});

  for (const auto* label : {"1.5", "-1", "x", "1e9"}) {
    path = dir_.write("label.csv", std::string("1,2,0\n3,4,") + label + "\n");
    expectDataError([&] { readCsvFile(path); },
                    {"line 2, column 3: expected a class label (an integer 0..100000)",
                     std::string("found \"") + label + "\""});
  }
  path = dir_.write("class.csv", header + "1,2,0\n1,2,2\n");
  expectDataError([&] { readCsvFile(path); },
                  {"line 3, column 3: label 2, but the header (line 1) names 2 classes (a, b): "
                   "expected 0..1"});
}

TEST_F(CsvReaderTest, HeaderMustAgreeWithTheRows) {
  auto path = dir_.write("more.csv", "150,2,a,b\n1,2,0\n3,4,1\n");
  expectDataError([&] { readCsvFile(path); },
                  {path + ": line 1: the header declares 150 samples, but the file has 2 rows "
                          "(truncated file?)"});
  // A header claiming a trillion rows is checked after reading, never allocated.
  path = dir_.write("lying.csv", "1000000000000,2,a,b\n1,2,0\n");
  expectDataError([&] { readCsvFile(path); }, {"declares 1000000000000 samples", "has 1 rows"});
  path = dir_.write("fewer.csv", "1,2,a,b\n1,2,0\n3,4,1\n");
  expectDataError([&] { readCsvFile(path); }, {"declares 1 samples, but the file has 2 rows"});
  path = dir_.write("features.csv", "2,3,a,b\n1,2,0\n3,4,1\n");
  expectDataError([&] { readCsvFile(path); },
                  {"line 1: the header declares 3 features, but the rows have 2"});
}

TEST_F(CsvReaderTest, TruncatedGzipIsAnErrorNotAShortFile) {
  std::string rows;
  for (int i = 0; i < 2000; ++i) rows += fmt::format("{},{},1\n", i, i * 7 % 13);
  const auto whole = dir_.write("whole.csv.gz", rows, /*gzip=*/true);
  EXPECT_EQ(readCsvFile(whole).features.size(0), 2000);
  std::string bytes;
  {
    std::ifstream in(whole, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto cut = dir_.write("cut.csv.gz", bytes.substr(0, bytes.size() / 2));
  expectDataError([&] { readCsvFile(cut); }, {cut, "the .gz file is truncated"});
  expectDataError([&] { readCsvFile(dir_.path("missing.csv")); }, {"missing.csv: cannot open"});
}

}  // namespace
}  // namespace ddp::data
