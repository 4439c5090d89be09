// Reader for labelled tabular data in CSV: one sample per line, its features as numbers
// and its class label, a non-negative integer, in the last column. Plain or gzip
// (zlib reads both). This is the layout of scikit-learn's bundled data files:
//   iris.csv, wine_data.csv, breast_cancer.csv  first line is sklearn's header
//       "n_samples,n_features,<class name>,...", e.g. "150,4,setosa,versicolor,virginica"
//   digits.csv.gz                                no header: 64 pixel values, then the label
// A first line of names only (e.g. "sepal_length,...,label") is taken as a column header
// and skipped. Blank lines are skipped (line numbers still count them); '\r\n' is accepted.
// Quoted cells ("a,b") are not: no file of this kind needs them, and a quoted number is
// reported as a cell that is not a number.
//
// Errors (DataError) name the file, the line and column (1-based), what was expected and
// what was found: a cell that is not a finite number, a row with a different number of
// columns than the first, a label that is not a non-negative integer (or names a class the
// header does not list), a file with no rows, and a header whose n_samples or n_features
// disagree with the rows. The header is only checked against the rows after they are read;
// nothing is allocated from what it claims.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "data/data_error.h"

namespace ddp::data {

struct CsvTable {
  torch::Tensor features;               // float32 [N, F], as written in the file
  torch::Tensor labels;                 // int64 [N]
  std::vector<std::string> classNames;  // from sklearn's header; empty without one
  std::int64_t numClasses = 0;          // max label + 1
};

// Labels above this are refused: a model with that many outputs would not be a model of
// this data but a typo (and an allocation of gigabytes).
constexpr std::int64_t kCsvMaxLabel = 100000;

CsvTable readCsvFile(const std::string& path);

}  // namespace ddp::data
