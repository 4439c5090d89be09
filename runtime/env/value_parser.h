// One parser for the integers of every source (environment variables, launcher flags,
// ddptrain options and config files), and one shape for the message about a bad value:
//
//   <NAME>=<value>: expected <what>; found <what instead>. <what to do>
//   <NAME> (unset): expected ...
//
// Callers wrap the message in the error of their family (env::EnvError,
// launcher::LaunchError, ConfigError), so a bad value reads the same wherever it was set.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ddp::env {

struct IntegerParse {
  std::optional<long long> value;  // set when the text is an integer in range
  std::string found;               // otherwise: what the text is instead, for the message
};

// Decimal digits only (no sign, no whitespace, no fraction, no leading '+') in [min, max].
IntegerParse parseInteger(std::string_view text, long long min, long long max);

// "a decimal integer in [min, max]", the `expected` of a parseInteger failure.
std::string integerExpectation(long long min, long long max);

// Why `host` is not a bare host name or IP address (an IPv6 address has two colons or
// more): {expected, found}, or nullopt when it is one. Used for MASTER_ADDR,
// PET_MASTER_ADDR and --master-addr alike.
struct HostProblem {
  std::string expected;
  std::string found;
};
std::optional<HostProblem> checkBareHost(std::string_view host);

std::string describeBadValue(const std::string& name, const std::optional<std::string>& value,
                             const std::string& expected, const std::string& found,
                             const std::string& hint);

}  // namespace ddp::env
