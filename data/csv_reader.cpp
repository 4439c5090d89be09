#include "data/csv_reader.h"

#include <charconv>
#include <cmath>
#include <optional>
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "data/gz_file.h"

namespace ddp::data {
namespace {

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t\r") - first + 1);
}

std::vector<std::string_view> splitCells(std::string_view line) {
  std::vector<std::string_view> cells;
  for (;;) {
    const auto comma = line.find(',');
    cells.push_back(trim(line.substr(0, comma)));
    if (comma == std::string_view::npos) return cells;
    line.remove_prefix(comma + 1);
  }
}

// A cell as it goes into a message: quoted, cut short, control bytes shown as '?' (a
// binary file passed by mistake should not garble the terminal).
std::string quote(std::string_view cell) {
  constexpr std::size_t kMaxShown = 40;
  std::string shown(cell.substr(0, kMaxShown));
  for (auto& c : shown) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return fmt::format("\"{}\"{}", shown, cell.size() > kMaxShown ? "..." : "");
}

// A finite number written in full (no trailing text), or nothing.
std::optional<double> parseNumber(std::string_view cell) {
  double value = 0;
  const auto* end = cell.data() + cell.size();
  const auto [stop, error] = std::from_chars(cell.data(), end, value);
  if (cell.empty() || error != std::errc() || stop != end || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

std::optional<std::int64_t> parseCount(std::string_view cell) {
  std::int64_t value = 0;
  const auto* end = cell.data() + cell.size();
  const auto [stop, error] = std::from_chars(cell.data(), end, value);
  if (cell.empty() || error != std::errc() || stop != end || value < 0) return std::nullopt;
  return value;
}

bool allNames(const std::vector<std::string_view>& cells, std::size_t from) {
  for (std::size_t i = from; i < cells.size(); ++i) {
    if (parseNumber(cells[i])) return false;
  }
  return from < cells.size();
}

// Note [CSV headers]: the first non-blank line is a header when it cannot be a row.
// sklearn's header is "n_samples,n_features,<class names>": two counts, then names only
// (a row always ends in a numeric label). A header of column names has no number at all.
// Anything else is a row, and a bad cell in it is reported as such.
struct SklearnHeader {
  std::int64_t line = 0;
  std::int64_t samples = 0;
  std::int64_t features = 0;
};

}  // namespace

CsvTable readCsvFile(const std::string& path) {
  const std::string content = readWholeFile(path);
  if (content.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw DataError(
        fmt::format("{}: {} file, expected CSV rows (features, then an integer "
                    "class label)",
                    path, content.empty() ? "empty" : "blank"));
  }

  // Text never holds a NUL byte; without this check a binary file reads as one long
  // header line with the puzzling complaint that no rows follow it.
  if (const auto nul = content.find('\0'); nul != std::string::npos) {
    throw DataError(
        fmt::format("{}: offset {}: expected CSV text, found a NUL byte (binary "
                    "data: an IDX file, or compressed other than with gzip?)",
                    path, nul));
  }

  CsvTable table;
  std::optional<SklearnHeader> header;
  std::int64_t headerLine = 0;   // the line of either kind of header, 0 if none
  std::int64_t columns = 0;      // of the first row; every row must have as many
  std::int64_t columnsLine = 0;  // where that was seen
  std::int64_t rows = 0;
  std::vector<float> features;  // grows with the rows read, never sized from the header
  std::vector<std::int64_t> labels;
  std::int64_t maxLabel = -1;

  std::string_view rest = content;
  for (std::int64_t lineNumber = 1; !rest.empty(); ++lineNumber) {
    const auto newline = rest.find('\n');
    const std::string_view line = rest.substr(0, newline);
    rest.remove_prefix(newline == std::string_view::npos ? rest.size() : newline + 1);
    if (trim(line).empty()) continue;
    const auto cells = splitCells(line);
    const auto where = [&](std::size_t column) {
      return fmt::format("{}: line {}, column {}", path, lineNumber, column + 1);
    };

    if (headerLine == 0 && rows == 0) {  // Note [CSV headers]
      const auto samples = parseCount(cells[0]);
      const auto featureCount = cells.size() > 1 ? parseCount(cells[1]) : std::nullopt;
      if (samples && featureCount && allNames(cells, 2)) {
        header = SklearnHeader{lineNumber, *samples, *featureCount};
        table.classNames.assign(cells.begin() + 2, cells.end());
        headerLine = lineNumber;
        continue;
      }
      if (allNames(cells, 0)) {
        headerLine = lineNumber;
        continue;
      }
    }

    const auto numCells = static_cast<std::int64_t>(cells.size());
    if (columns == 0) {
      if (numCells < 2) {
        throw DataError(
            fmt::format("{}: expected at least 2 columns (features, then the "
                        "label), found {}",
                        where(0), numCells));
      }
      columns = numCells;
      columnsLine = lineNumber;
    } else if (numCells != columns) {
      throw DataError(
          fmt::format("{}: line {}: expected {} columns ({} features and the label, "
                      "as on line {}), found {}",
                      path, lineNumber, columns, columns - 1, columnsLine, numCells));
    }
    for (std::int64_t c = 0; c + 1 < numCells; ++c) {
      const auto value = parseNumber(cells[c]);
      if (!value) {
        throw DataError(
            fmt::format("{}: expected a number (a feature), found {}", where(c), quote(cells[c])));
      }
      features.push_back(static_cast<float>(*value));
    }
    const auto labelColumn = static_cast<std::size_t>(numCells - 1);
    const auto label = parseNumber(cells[labelColumn]);
    if (!label || *label < 0 || *label != std::floor(*label) || *label > kCsvMaxLabel) {
      throw DataError(
          fmt::format("{}: expected a class label (an integer 0..{}) in the last "
                      "column, found {}",
                      where(labelColumn), kCsvMaxLabel, quote(cells[labelColumn])));
    }
    const auto classIndex = static_cast<std::int64_t>(*label);
    if (!table.classNames.empty() &&
        classIndex >= static_cast<std::int64_t>(table.classNames.size())) {
      throw DataError(
          fmt::format("{}: label {}, but the header (line {}) names {} classes ({}): "
                      "expected 0..{}",
                      where(labelColumn), classIndex, headerLine, table.classNames.size(),
                      fmt::join(table.classNames, ", "), table.classNames.size() - 1));
    }
    labels.push_back(classIndex);
    maxLabel = std::max(maxLabel, classIndex);
    ++rows;
  }

  if (rows == 0) {
    throw DataError(
        fmt::format("{}: line {} is a header, but no data rows follow (truncated "
                    "file?)",
                    path, headerLine));
  }
  if (header) {
    if (header->features != columns - 1) {
      throw DataError(
          fmt::format("{}: line {}: the header declares {} features, but the rows "
                      "have {} (then the label)",
                      path, header->line, header->features, columns - 1));
    }
    if (header->samples != rows) {
      throw DataError(
          fmt::format("{}: line {}: the header declares {} samples, but the file "
                      "has {} rows{}",
                      path, header->line, header->samples, rows,
                      header->samples > rows ? " (truncated file?)" : ""));
    }
  }
  table.features = torch::from_blob(features.data(), {rows, columns - 1}, torch::kFloat32).clone();
  table.labels = torch::from_blob(labels.data(), {rows}, torch::kInt64).clone();
  table.numClasses = maxLabel + 1;
  return table;
}

}  // namespace ddp::data
