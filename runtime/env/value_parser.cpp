#include "runtime/env/value_parser.h"

#include <algorithm>
#include <charconv>

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

std::string integerExpectation(long long min, long long max) {
  return "a decimal integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
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
