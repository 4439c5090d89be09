#include "tests/support/fuzz.h"

#include <cxxabi.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <new>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <typeinfo>

#include <gtest/gtest.h>

#include "runtime/env/cluster_env.h"
#include "runtime/error.h"

namespace ddp::testing::fuzz {
namespace {

using Clock = std::chrono::steady_clock;

// Inputs per forked child: a fork of a process that has loaded LibTorch costs about a
// millisecond, an input a few microseconds to a millisecond.
constexpr std::int64_t kBatchInputs = 512;
// The most mutations stacked on one corpus entry (each further one with probability 1/2).
constexpr int kMaxMutations = 16;
// How much of an exception's text a finding keeps (c10::Error appends a backtrace).
constexpr std::size_t kMaxDetailBytes = 400;
// A target stops after this many findings: more of them add time (a hang costs the time
// limit), not information.
constexpr std::size_t kMaxFindings = 20;

std::uint64_t splitMix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (const unsigned char c : text) hash = (hash ^ c) * 0x100000001b3ull;
  return hash;
}

std::size_t below(Rng& rng, std::size_t n) { return n == 0 ? 0 : rng() % n; }
std::size_t position(const std::string& s, Rng& rng) { return below(rng, s.size() + 1); }

template <typename T>
const T& pick(const std::vector<T>& items, Rng& rng) {
  return items[below(rng, items.size())];
}

// Bytes that mean something in one of our formats, or in none (NUL, 0xff).
constexpr std::string_view kInterestingBytes =
    std::string_view("\0\xff\x7f\x80\n\r\t :,\"'-#&*!|>?[]{}%@`=\\.0", 32);

// Text that is not text: invalid and overlong UTF-8, a surrogate, a BOM, NULs, CR LF.
const std::vector<std::string>& oddBytes() {
  static const std::vector<std::string> sequences = {std::string("\0", 1),
                                                     "\xff",
                                                     "\xc0\x80",
                                                     "\xed\xa0\x80",
                                                     "\xf4\x90\x80\x80",
                                                     "\xe2\x82",
                                                     "\x80",
                                                     "\xef\xbb\xbf",
                                                     "\r\n",
                                                     "\r",
                                                     "\x1b[2J",
                                                     "\xfe\xff"};
  return sequences;
}

// A position at the start of a line (keys, variables and flags live there).
std::size_t lineStart(const std::string& s, Rng& rng) {
  std::vector<std::size_t> starts = {0};
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n') starts.push_back(i + 1);
  }
  return pick(starts, rng);
}

void replaceNumber(std::string& s, Rng& rng) {
  const auto& number = pick(interestingNumbers(), rng);
  std::vector<std::size_t> starts;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool digit = s[i] >= '0' && s[i] <= '9';
    if (digit && (i == 0 || s[i - 1] < '0' || s[i - 1] > '9')) starts.push_back(i);
  }
  if (starts.empty()) {
    s.insert(position(s, rng), number);
    return;
  }
  const std::size_t start = pick(starts, rng);
  std::size_t end = start;
  while (end < s.size() && ((s[end] >= '0' && s[end] <= '9') || s[end] == '.')) ++end;
  s.replace(start, end - start, number);
}

// One built-in mutation, or one of the target's own.
void mutateOnce(std::string& s, const Target& target, const std::string& other, Rng& rng) {
  constexpr std::size_t kBuiltIn = 12;
  const std::size_t op = below(rng, kBuiltIn + target.mutators.size());
  if (op >= kBuiltIn) {
    target.mutators[op - kBuiltIn](s, rng);
    return;
  }
  switch (op) {
    case 0:  // flip one bit
      if (!s.empty()) s[below(rng, s.size())] ^= static_cast<char>(1u << below(rng, 8));
      break;
    case 1:  // one byte becomes one that means something
      if (!s.empty())
        s[below(rng, s.size())] = kInterestingBytes[below(rng, kInterestingBytes.size())];
      break;
    case 2: {  // random bytes inserted
      std::string bytes(1 + below(rng, 8), '\0');
      for (auto& b : bytes) b = static_cast<char>(rng());
      s.insert(position(s, rng), bytes);
      break;
    }
    case 3: {  // a range deleted
      const std::size_t at = below(rng, s.size());
      s.erase(at, 1 + below(rng, std::min<std::size_t>(64, s.size() - at + 1)));
      break;
    }
    case 4: {  // a range copied elsewhere
      const std::size_t at = below(rng, s.size());
      const std::string piece = s.substr(at, 1 + below(rng, 32));
      s.insert(position(s, rng), piece);
      break;
    }
    case 5:  // a piece of the grammar, anywhere or at the start of a line
      if (!target.dictionary.empty()) {
        s.insert(below(rng, 2) == 0 ? position(s, rng) : lineStart(s, rng),
                 pick(target.dictionary, rng));
      }
      break;
    case 6:  // a number replaced by one at or past a limit
      replaceNumber(s, rng);
      break;
    case 7: {  // the head of this input and the tail of another
      const std::size_t cut = position(s, rng);
      s = s.substr(0, cut) + other.substr(below(rng, other.size() + 1));
      break;
    }
    case 8:  // bytes that are not text
      s.insert(position(s, rng), pick(oddBytes(), rng));
      break;
    case 9: {  // a piece repeated: deep nesting ("[" x 3000), long lines, many keys
      const std::string piece = !target.dictionary.empty() && below(rng, 2) == 0
                                    ? pick(target.dictionary, rng)
                                    : s.substr(below(rng, s.size()), 1 + below(rng, 8));
      static constexpr std::size_t kRepeats[] = {2, 16, 100, 1000, 3000, 10000};
      const std::size_t repeats = kRepeats[below(rng, std::size(kRepeats))];
      std::string run;
      for (std::size_t i = 0; i < repeats && run.size() < target.maxInputBytes; ++i) run += piece;
      s.insert(position(s, rng), run);
      break;
    }
    case 10:  // cut short
      s.resize(position(s, rng));
      break;
    case 11: {  // one line replaced by a line of another input
      const std::size_t start = lineStart(s, rng);
      const std::size_t end = std::min(s.find('\n', start), s.size());
      const std::size_t otherStart = lineStart(other, rng);
      const std::size_t otherEnd = std::min(other.find('\n', otherStart), other.size());
      s.replace(start, end - start, other.substr(otherStart, otherEnd - otherStart));
      break;
    }
  }
}

// The current exception as "<type>: <what>".
std::string describeCurrentException() {
  const std::type_info* type = abi::__cxa_current_exception_type();
  std::string what;
  try {
    throw;
  } catch (const std::exception& e) {
    type = &typeid(e);
    what = e.what();
  } catch (...) {
  }
  int status = 0;
  char* demangled = abi::__cxa_demangle(type ? type->name() : "?", nullptr, nullptr, &status);
  std::string text = status == 0 && demangled ? demangled : (type ? type->name() : "unknown");
  std::free(demangled);
  // c10::Error appends the C++ backtrace, which says nothing about the input.
  what = what.substr(0, what.find("\nException raised from "));
  if (!what.empty()) text += ": " + what.substr(0, kMaxDetailBytes);
  return text;
}

// What the parent and a child share: where the child is, and its tallies.
struct Progress {
  std::atomic<std::int64_t> current;       // the input being parsed
  std::atomic<std::int64_t> startedNanos;  // when it started (steady clock)
  std::atomic<std::int64_t> done;          // inputs finished, first one included
  std::atomic<std::int64_t> accepted;
  std::atomic<std::int64_t> rejected;
};

std::int64_t nanosNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

void writeAll(int fd, const void* data, std::size_t size) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the parent is gone; nobody to tell
    bytes += n;
    size -= static_cast<std::size_t>(n);
  }
}

// Caps the child's address space at its size now plus `extra` bytes.
void limitMemory(std::size_t extra) {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0;
  statm >> pages;
  const auto limit =
      static_cast<rlim_t>(pages * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)) + extra);
  const rlimit bound{limit, limit};
  ::setrlimit(RLIMIT_AS, &bound);
}

// A child's life: inputs [first, end), each exception other than a PermanentError
// reported on `fd` as (index, length, text).
[[noreturn]] void runChild(const Target& target, const Settings& settings, std::int64_t first,
                           std::int64_t end, Clock::time_point deadline, Progress& progress,
                           int fd) {
  // Parsers that print stay quiet, and one that reads stdin (a path of /dev/stdin) ends.
  const int devNull = ::open("/dev/null", O_RDWR);
  if (devNull >= 0) {
    ::dup2(devNull, STDIN_FILENO);
    ::dup2(devNull, STDOUT_FILENO);
  }
  limitMemory(settings.memoryLimitBytes);
  for (std::int64_t i = first; i < end; ++i) {
    if (settings.seconds > 0 && Clock::now() >= deadline) break;
    progress.current = i;
    progress.startedNanos = nanosNow();
    try {
      const std::string input = makeInput(target, settings.seed, i);
      target.parse(input);
      ++progress.accepted;
    } catch (const PermanentError&) {
      ++progress.rejected;
    } catch (...) {
      const std::string text = describeCurrentException();
      const auto length = static_cast<std::uint32_t>(text.size());
      writeAll(fd, &i, sizeof i);
      writeAll(fd, &length, sizeof length);
      writeAll(fd, text.data(), text.size());
    }
    progress.done = i + 1;
  }
  ::_exit(0);
}

// "SIGSEGV (Segmentation fault)".
std::string signalName(int signal) {
  const char* abbrev = ::sigabbrev_np(signal);
  const char* description = ::sigdescr_np(signal);
  return (abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(signal)) +
         (description ? std::string(" (") + description + ")" : "");
}

std::filesystem::path findingsDir() {
  const auto env = env::currentEnvironment();
  if (auto dir = env::lookup(env, "DDPRUN_FUZZ_FINDINGS_DIR"); dir && !dir->empty()) return *dir;
  return std::filesystem::temp_directory_path() / "ddprun_fuzz_findings";
}

// Keeps the input of a finding, byte for byte; returns where ("" if it could not).
std::string save(const Report& report, const Finding& finding) {
  std::error_code error;
  const auto dir = findingsDir();
  std::filesystem::create_directories(dir, error);
  const auto path = dir / (report.target + "-seed" + std::to_string(report.seed) + "-" +
                           std::to_string(finding.index) + ".bin");
  std::ofstream out(path, std::ios::binary);
  out.write(finding.input.data(), static_cast<std::streamsize>(finding.input.size()));
  return out ? path.string() : "";
}

// One batch in a child: the findings the child reported, then how it ended.
struct BatchResult {
  std::vector<std::pair<std::int64_t, std::string>> exceptions;
  int waitStatus = 0;
  bool killedAsHung = false;
};

BatchResult runBatch(const Target& target, const Settings& settings, std::int64_t first,
                     std::int64_t end, Clock::time_point deadline, Progress& progress) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  std::cout.flush();
  std::cerr.flush();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    ::close(fds[0]);
    runChild(target, settings, first, end, deadline, progress, fds[1]);
  }
  ::close(fds[1]);
  BatchResult result;
  std::string records;
  const auto limitNanos =
      std::chrono::duration_cast<std::chrono::nanoseconds>(settings.inputTimeLimit).count();
  for (;;) {
    pollfd readable{fds[0], POLLIN, 0};
    const int ready = ::poll(&readable, 1, 50);
    if (ready > 0) {
      char buffer[4096];
      const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
      if (n > 0) {
        records.append(buffer, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) break;  // the child is gone
      if (errno != EINTR) break;
    }
    // The watchdog: an input that takes longer than the limit is a hang.
    if (progress.done <= progress.current && nanosNow() - progress.startedNanos > limitNanos) {
      ::kill(pid, SIGKILL);
      result.killedAsHung = true;
    }
  }
  ::close(fds[0]);
  while (::waitpid(pid, &result.waitStatus, 0) < 0 && errno == EINTR) {
  }
  // Records: index (int64), length (uint32), text; a record cut short by a crash is dropped.
  std::size_t at = 0;
  while (at + sizeof(std::int64_t) + sizeof(std::uint32_t) <= records.size()) {
    std::int64_t index = 0;
    std::uint32_t length = 0;
    std::memcpy(&index, records.data() + at, sizeof index);
    std::memcpy(&length, records.data() + at + sizeof index, sizeof length);
    at += sizeof index + sizeof length;
    if (at + length > records.size()) break;
    result.exceptions.emplace_back(index, records.substr(at, length));
    at += length;
  }
  return result;
}

}  // namespace

const std::vector<std::string>& interestingNumbers() {
  static const std::vector<std::string> numbers = {
      "0",
      "1",
      "-1",
      "-0",
      "+1",
      "00000000000000000001",
      "65535",
      "65536",
      "86400",
      "86401",
      "2147483647",
      "2147483648",
      "-2147483648",
      "-2147483649",
      "4294967295",
      "4294967297",
      "1073741824",
      "1099511627776",
      "9223372036854775",
      "9223372036854776",
      "9223372036854775807",
      "9223372036854775808",
      "-9223372036854775808",
      "18446744073709551615",
      "18446744073709551616",
      "99999999999999999999999999999999",
      "1e308",
      "1e309",
      "-1e309",
      "1e-320",
      "4.9e-324",
      "1e-17",
      "0.99999999999999999",
      "0x7fffffff",
      "1.5",
      ".5",
      "5.",
      "1e3",
      "nan",
      "inf",
      "-inf",
      "NaN",
      "1_000",
      "\xef\xbc\x91"  // a fullwidth digit one
  };
  return numbers;
}

std::string escape(const std::string& text, std::size_t maxBytes) {
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < maxBytes; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
      // A hex escape runs on through hex digits: close the literal before the next one.
      if (i + 1 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 1]))) {
        out += "\"\"";
      }
    }
  }
  if (text.size() > maxBytes) out += "...(" + std::to_string(text.size()) + " bytes)";
  return out;
}

std::string writeInputFile(const std::string& dir, const std::string& stem,
                           const std::string& content) {
  const std::string path = dir + "/" + stem + "_" + std::to_string(::getpid());
  ::unlink(path.c_str());
  std::ofstream(path, std::ios::binary)
      .write(content.data(), static_cast<std::streamsize>(content.size()));
  return path;
}

Settings Settings::fromEnvironment(std::int64_t defaultIterations) {
  const auto env = env::currentEnvironment();
  const auto read = [&](const char* name, long long min,
                        long long max) -> std::optional<long long> {
    const auto text = env::lookup(env, name);
    if (!text) return std::nullopt;
    return env::parseInt(name, *text, static_cast<int>(min), static_cast<int>(max));
  };
  Settings settings;
  settings.iterations = defaultIterations;
  if (const auto seed = read("DDPRUN_FUZZ_SEED", 0, std::numeric_limits<int>::max())) {
    settings.seed = static_cast<std::uint64_t>(*seed);
  }
  if (const auto seconds = read("DDPRUN_FUZZ_SECONDS", 1, 24 * 3600)) {
    settings.seconds = static_cast<double>(*seconds);
    settings.iterations = std::numeric_limits<std::int64_t>::max();
  }
  if (const auto iterations = read("DDPRUN_FUZZ_ITERATIONS", 1, std::numeric_limits<int>::max())) {
    settings.iterations = *iterations;
  }
  return settings;
}

std::string makeInput(const Target& target, std::uint64_t seed, std::int64_t index) {
  if (target.corpus.empty())
    throw std::invalid_argument("fuzz target " + target.name + ": no corpus");
  if (index < static_cast<std::int64_t>(target.corpus.size())) {
    return target.corpus[static_cast<std::size_t>(index)];
  }
  Rng rng(splitMix64(splitMix64(seed ^ fnv1a(target.name)) + static_cast<std::uint64_t>(index)));
  std::string input = pick(target.corpus, rng);
  int mutations = 1;
  while (mutations < kMaxMutations && below(rng, 2) == 0) ++mutations;
  for (int m = 0; m < mutations; ++m) {
    mutateOnce(input, target, pick(target.corpus, rng), rng);
    if (input.size() > target.maxInputBytes) input.resize(target.maxInputBytes);
  }
  return input;
}

Report run(const Target& target, const Settings& settings) {
  Report report;
  report.target = target.name;
  report.seed = settings.seed;
  void* shared =
      ::mmap(nullptr, sizeof(Progress), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) throw std::runtime_error("mmap failed");
  auto& progress = *new (shared) Progress{};
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(settings.seconds));
  std::int64_t next = 0;
  while (next < settings.iterations && (settings.seconds <= 0 || Clock::now() < deadline) &&
         report.findings.size() < kMaxFindings) {
    const std::int64_t end = std::min(settings.iterations - next, kBatchInputs) + next;
    progress.current = next;
    progress.done = next;
    progress.startedNanos = nanosNow();
    const BatchResult batch = runBatch(target, settings, next, end, deadline, progress);
    for (const auto& [index, text] : batch.exceptions) {
      report.findings.push_back(
          {index, "exception", text, makeInput(target, settings.seed, index), ""});
    }
    const int status = batch.waitStatus;
    const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0 && !batch.killedAsHung;
    if (clean) {
      next = progress.done;
      if (next < end && settings.seconds <= 0) {
        throw std::logic_error("fuzz: a child stopped before its batch ended");
      }
      if (next < end) break;  // the time is up
      continue;
    }
    const std::int64_t index = progress.current;
    Finding finding{index, "crash", "", makeInput(target, settings.seed, index), ""};
    if (batch.killedAsHung) {
      finding.kind = "hang";
      finding.detail = "no answer after " + std::to_string(settings.inputTimeLimit.count()) + " ms";
    } else if (WIFSIGNALED(status)) {
      finding.detail = "killed by " + signalName(WTERMSIG(status));
    } else {
      finding.detail = "exited with code " + std::to_string(WEXITSTATUS(status));
    }
    report.findings.push_back(std::move(finding));
    next = index + 1;
  }
  report.inputs = next;
  report.accepted = progress.accepted;
  report.rejected = progress.rejected;
  report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ::munmap(shared, sizeof(Progress));
  for (auto& finding : report.findings) finding.savedTo = save(report, finding);
  return report;
}

Report runEachOnce(const std::string& name, const std::vector<std::string>& inputs,
                   std::function<void(const std::string&)> parse, const std::string& expected,
                   std::size_t memoryLimitBytes) {
  Target target{name, inputs};
  target.parse = [parse = std::move(parse), expected](const std::string& input) {
    try {
      parse(input);
    } catch (const PermanentError& e) {
      if (std::string(e.what()).find(expected) != std::string::npos) throw;
      throw std::logic_error("a PermanentError without \"" + expected + "\": " + e.what());
    }
  };
  Settings settings;
  settings.iterations = static_cast<std::int64_t>(inputs.size());  // the corpus as it is
  settings.memoryLimitBytes = memoryLimitBytes;
  return run(target, settings);
}

std::int64_t Report::count(const std::string& kind) const {
  return std::count_if(findings.begin(), findings.end(),
                       [&](const Finding& f) { return f.kind == kind; });
}

std::string Report::summary() const {
  std::ostringstream line;
  line << "fuzz " << target << ": " << inputs << " inputs (" << accepted << " accepted, "
       << rejected << " PermanentError); " << count("crash") << " crashes, " << count("hang")
       << " hangs, " << count("exception") << " other exceptions; seed " << seed << ", "
       << std::fixed << std::setprecision(1) << seconds << " s";
  if (findings.size() >= kMaxFindings) line << " (stopped at " << kMaxFindings << " findings)";
  return line.str();
}

std::string Report::describeFindings() const {
  std::ostringstream out;
  for (const auto& f : findings) {
    out << "  " << target << " input " << f.index << " (seed " << seed << "): " << f.kind << ", "
        << f.detail << "\n    input \"" << escape(f.input) << "\"";
    if (!f.savedTo.empty()) out << "\n    saved to " << f.savedTo;
    out << "\n";
  }
  return out.str();
}

Report runAndExpectNoFindings(const Target& target, std::int64_t defaultIterations) {
  const Report report = run(target, Settings::fromEnvironment(defaultIterations));
  std::cout << report.summary() << std::endl;
  ::testing::Test::RecordProperty("fuzz_inputs", std::to_string(report.inputs));
  ::testing::Test::RecordProperty("fuzz_findings", std::to_string(report.findings.size()));
  EXPECT_TRUE(report.findings.empty())
      << report.findings.size() << " inputs neither parsed nor gave a PermanentError "
      << "(Note [What the fuzzer checks] in tests/support/fuzz.h):\n"
      << report.describeFindings();
  return report;
}

}  // namespace ddp::testing::fuzz
