// One parser for the integers of every source (environment variables, launcher flags,
// ddptrain options and config files), and one shape for the message about a bad value:
//
//   <NAME>=<value>: expected <what>; found <what instead>. <what to do>
//   <NAME> (unset): expected ...
//
// Callers wrap the message in the error of their family (env::EnvError,
// launcher::LaunchError, ConfigError), so a bad value reads the same wherever it was set.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ddp::env {

struct IntegerParse {
  std::optional<long long> value;  // set when the text is an integer in range
  std::string found;               // otherwise: what the text is instead, for the message
};

// Decimal digits only (no sign, no whitespace, no fraction, no leading '+') in [min, max].
IntegerParse parseInteger(std::string_view text, long long min, long long max);

// "a decimal integer in [min, max]", the `expected` of a parseInteger failure.
std::string integerExpectation(long long min, long long max);

// The items of a list such as PATH ("a:b") or CUDA_VISIBLE_DEVICES ("0,1"), empty ones kept:
// "" is {""}, "a," is {"a", ""}.
std::vector<std::string> splitList(std::string_view text, char separator);

// The longest timeout that any flag, option or variable takes, in seconds (7 days): far
// past any real wait, and far below where a deadline overflows (seconds become
// milliseconds, and now() + timeout the steady clock's nanoseconds: 2^63 ns is 292 years).
constexpr long long kMaxTimeoutSeconds = 7 * 24 * 3600;

struct SecondsParse {
  std::optional<std::chrono::milliseconds> value;  // set when the text is a timeout in range
  std::string found;  // otherwise: what the text is instead, for the message
};

// A decimal number of seconds ("30", "0.5", "1e3"; no sign, whitespace, hex, inf or nan)
// of at least 1 ms and at most maxSeconds, in whole milliseconds.
SecondsParse parseSeconds(std::string_view text, long long maxSeconds = kMaxTimeoutSeconds);

// "a positive number of seconds, at most <maxSeconds>", the `expected` of a parseSeconds
// failure.
std::string secondsExpectation(long long maxSeconds = kMaxTimeoutSeconds);

// Why `host` is not a bare host name or IP address (an IPv6 address has two colons or
// more): {expected, found}, or nullopt when it is one. Used for MASTER_ADDR,
// PET_MASTER_ADDR and --master-addr alike.
struct HostProblem {
  std::string expected;
  std::string found;
};
std::optional<HostProblem> checkBareHost(std::string_view host);

// What a file argument must be. Checked before the file is opened: a FIFO opened for
// reading or writing waits for its other end forever, and a directory or a device read
// as a file fails obscurely (/dev/zero never ends).
enum class FileKind {
  kRegularFile,   // a file to read
  kDirectory,     // a directory to read or write in
  kWritableFile,  // a file to write: a regular file, or a character device (/dev/null)
};

// Why `path` is not of `kind`: {expected, found}, or nullopt when it is. `mayBeMissing`: a
// path that does not exist (yet) is fine, for outputs and for inputs that only rank 0
// reads (other ranks may not mount the volume).
struct PathProblem {
  std::string expected;
  std::string found;
};
std::optional<PathProblem> checkPath(const std::string& path, FileKind kind, bool mayBeMissing);

// A stat() mode as a message's `found`: "a regular file", "a directory", "a FIFO (named
// pipe)", "a socket", "a character device", "a block device".
std::string describeFileType(unsigned mode);

std::string describeBadValue(const std::string& name, const std::optional<std::string>& value,
                             const std::string& expected, const std::string& found,
                             const std::string& hint);

}  // namespace ddp::env
