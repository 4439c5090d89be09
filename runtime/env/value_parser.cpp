#include "runtime/env/value_parser.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>

namespace ddp::env {
namespace {

bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isSpace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
bool allDigits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), isDigit);
}

}  // namespace

IntegerParse parseInteger(std::string_view text, long long min, long long max) {
  const std::string shown(text);
  if (text.empty()) return {std::nullopt, "an empty value"};
  if (isSpace(text.front()) || isSpace(text.back())) {
    return {std::nullopt, "whitespace around the number"};
  }
  if (text.front() == '-' && allDigits(text.substr(1))) return {std::nullopt, "a negative number"};
  if (!allDigits(text))
    return {std::nullopt, "'" + shown + "', which is not a whole decimal number"};
  long long parsed = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), parsed);
  if (error != std::errc() || parsed > max) {
    return {std::nullopt, shown + ", which is above " + std::to_string(max)};
  }
  if (parsed < min) return {std::nullopt, shown + ", which is below " + std::to_string(min)};
  return {parsed, ""};
}

SecondsParse parseSeconds(std::string_view text, long long maxSeconds) {
  const std::string shown(text);
  if (text.empty()) return {std::nullopt, "an empty value"};
  if (isSpace(text.front()) || isSpace(text.back())) {
    return {std::nullopt, "whitespace around the number"};
  }
  if (text.front() == '-') return {std::nullopt, "a negative number"};
  // from_chars would also take "inf", "nan" and "1p3"-style hex: only digits, a point and
  // an exponent here, starting with a digit or the point.
  const bool decimal = text.find_first_not_of("0123456789.eE+-") == std::string_view::npos &&
                       (isDigit(text.front()) || text.front() == '.');
  double seconds = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  if (!decimal || error == std::errc::invalid_argument || end != text.data() + text.size()) {
    return {std::nullopt, "'" + shown + "', which is not a number of seconds"};
  }
  const bool negativeExponent =
      text.find("e-") != std::string_view::npos || text.find("E-") != std::string_view::npos;
  const bool tiny = error == std::errc::result_out_of_range && negativeExponent;
  if (!tiny && (error != std::errc() || seconds > static_cast<double>(maxSeconds))) {
    return {std::nullopt, shown + ", which is above " + std::to_string(maxSeconds)};
  }
  const long long milliseconds = tiny ? 0 : std::llround(seconds * 1000);
  if (milliseconds < 1) return {std::nullopt, shown + ", which is below 0.001 (1 ms)"};
  return {std::chrono::milliseconds(milliseconds), ""};
}

std::string secondsExpectation(long long maxSeconds) {
  return "a positive number of seconds, at most " + std::to_string(maxSeconds);
}

std::optional<HostProblem> checkBareHost(std::string_view host) {
  const std::string expected = "the host name or IP address of rank 0";
  if (host.empty()) return HostProblem{expected, "an empty value"};
  if (std::any_of(host.begin(), host.end(), isSpace)) return HostProblem{expected, "whitespace"};
  // One colon is host:port; IPv6 addresses have at least two.
  if (std::count(host.begin(), host.end(), ':') == 1) {
    return HostProblem{"a host without a port", "host:port"};
  }
  return std::nullopt;
}

std::string describeFileType(unsigned mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "a special file";
}

std::optional<PathProblem> checkPath(const std::string& path, FileKind kind, bool mayBeMissing) {
  const std::string expected = kind == FileKind::kRegularFile ? "a regular file"
                               : kind == FileKind::kDirectory ? "a directory"
                                                              : "a regular file or /dev/null";
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) {
    const int error = errno;
    if (error == ENOENT && mayBeMissing) return std::nullopt;
    return PathProblem{expected,
                       std::string("nothing that can be read (") + std::strerror(error) + ")"};
  }
  const bool fits = kind == FileKind::kRegularFile ? S_ISREG(status.st_mode)
                    : kind == FileKind::kDirectory
                        ? S_ISDIR(status.st_mode)
                        : S_ISREG(status.st_mode) || S_ISCHR(status.st_mode);
  if (fits) return std::nullopt;
  return PathProblem{expected, describeFileType(status.st_mode)};
}

std::string integerExpectation(long long min, long long max) {
  return "a decimal integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
}

std::vector<std::string> splitList(std::string_view text, char separator) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (true) {
    const auto end = text.find(separator, start);
    items.emplace_back(text.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) return items;
    start = end + 1;
  }
}

std::string describeBadValue(const std::string& name, const std::optional<std::string>& value,
                             const std::string& expected, const std::string& found,
                             const std::string& hint) {
  std::string message = value ? name + "=" + *value : name + " (unset)";
  message += ": expected " + expected + "; found " + found + ".";
  if (!hint.empty()) message += " " + hint;
  return message;
}

}  // namespace ddp::env
