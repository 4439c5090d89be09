// A bounded random-mutation fuzzer for the parsers of user input (config files, data
// files, environment variables, flags), run as GoogleTest cases in the default suite.
//
// Note [Why not libFuzzer]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// Debian's clang-14 ships libFuzzer, and a harness built with it links against our g++ 12
// libraries (both use libstdc++; checked with ddprun_env). But libFuzzer steers by the
// coverage its compiler instruments, and our libraries, LibTorch, yaml-cpp and zlib are
// built by g++ without it: linked as they are, libFuzzer saw 3 edges in ddprun_env and
// mutated blind. Steering it would take a second, clang-built configuration of the
// parsers and everything they include (LibTorch's headers among them), built and kept
// working beside the real one on every machine. A blind fuzzer is what we can have here,
// so it is written for what matters without coverage: mutations that know the grammar
// (a Target's dictionary and mutators), deterministic inputs that can be regenerated from
// (seed, index), and a judge that survives what it finds.
//
// Note [What the fuzzer checks]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Every input must either be accepted or rejected with a ddp::PermanentError: a user's
// bad input exits 2 with a message (Note [Two error families] in runtime/error.h). A
// finding is anything else:
//   crash      the input killed the process (a signal, or an exit of its own);
//   hang       no answer within Settings::inputTimeLimit;
//   exception  any other exception (std::out_of_range from a std::stoi, c10::Error,
//              std::bad_alloc, yaml-cpp's own types): a message the user cannot act on,
//              and a transient exit (200) that the operators would retry forever.
// Inputs run in forked children, a batch at a time, each child under an address-space
// limit (Settings::memoryLimitBytes above its size at fork): a crash or a hang ends the
// child, not the test, and the parent carries on with the next input. An allocation that
// a header claimed and the file never backed fails there as std::bad_alloc (a finding)
// instead of taking the machine's memory.
//
// Input i of a target is a function of (seed, target name, i) alone, so a finding is
// reproduced by its index, and a run of N inputs is the same run on any machine.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace ddp::testing::fuzz {

using Rng = std::mt19937_64;

struct Target {
  std::string name;                 // e.g. "csv"; also mixed into every input's seed
  std::vector<std::string> corpus;  // valid inputs, the starting points of mutation
  // Pieces of the grammar inserted and repeated by the mutator (keys, operators, openers
  // for deep nesting such as "[" or "- ").
  std::vector<std::string> dictionary;
  // Extra mutations that know the format (e.g. an IDX header's dimension fields); each
  // is picked as often as one built-in mutation.
  std::vector<std::function<void(std::string&, Rng&)>> mutators;
  // Parses one input. Returns when it is accepted; throws when it is rejected.
  std::function<void(const std::string&)> parse;
  std::size_t maxInputBytes = 1 << 16;
};

struct Settings {
  std::uint64_t seed = 1;
  std::int64_t iterations = 0;  // inputs to run, or (seconds > 0) at most this many
  double seconds = 0;           // > 0: run for this long instead of `iterations` inputs
  std::chrono::milliseconds inputTimeLimit{5000};
  std::size_t memoryLimitBytes = std::size_t{2} << 30;

  // The defaults (`defaultIterations` inputs, seed 1) unless the environment asks for
  // more: DDPRUN_FUZZ_SECONDS (run each target this long), DDPRUN_FUZZ_ITERATIONS
  // (inputs per target), DDPRUN_FUZZ_SEED. A malformed value throws env::EnvError.
  static Settings fromEnvironment(std::int64_t defaultIterations);
};

struct Finding {
  std::int64_t index = 0;  // regenerate the input with makeInput(target, seed, index)
  std::string kind;        // "crash", "hang" or "exception"
  std::string detail;      // the signal, the time limit, or the exception's type and text
  std::string input;
  std::string savedTo;  // the input, byte for byte, for a debugger; "" when not saved
};

struct Report {
  std::string target;
  std::uint64_t seed = 0;
  std::int64_t inputs = 0;
  std::int64_t accepted = 0;
  std::int64_t rejected = 0;  // with a PermanentError
  std::vector<Finding> findings;
  double seconds = 0;

  std::int64_t count(const std::string& kind) const;
  // One line: "fuzz csv: 4000 inputs (312 accepted, 3688 PermanentError); 0 crashes,
  // 0 hangs, 0 other exceptions; seed 1, 2.1 s".
  std::string summary() const;
  // Every finding with its index, what happened and the input (escaped, cut short).
  std::string describeFindings() const;
};

// Input `index` of `target` (Note [What the fuzzer checks]): the first corpus.size()
// indices are the corpus itself, the rest mutations of it.
std::string makeInput(const Target& target, std::uint64_t seed, std::int64_t index);

// Runs the target's inputs in forked children (Note [What the fuzzer checks]). Findings
// are saved under $DDPRUN_FUZZ_FINDINGS_DIR, else <tmp>/ddprun_fuzz_findings.
Report run(const Target& target, const Settings& settings);

// run() with Settings::fromEnvironment(defaultIterations), the summary printed (for the
// log) and a GoogleTest failure listing every finding.
Report runAndExpectNoFindings(const Target& target, std::int64_t defaultIterations);

// Each of `inputs` once, as given, in a child under `memoryLimitBytes` (above the test's
// own size), judged as run() judges; a PermanentError whose message lacks `expected` is a
// finding too. For inputs too large to parse in the test's own process before a fix: the
// report's `rejected` counts the inputs refused as they should be.
Report runEachOnce(const std::string& name, const std::vector<std::string>& inputs,
                   std::function<void(const std::string&)> parse, const std::string& expected,
                   std::size_t memoryLimitBytes);

// `text` as a C string literal body: printable ASCII as is, everything else escaped,
// cut after `maxBytes` bytes ("..." then says so).
std::string escape(const std::string& text, std::size_t maxBytes = 200);

// Writes `content` to <dir>/<stem>_<pid> (each forked child has its own) as a new file and
// returns the path. New, not rewritten: ext4 flushes a file rewritten in place to the disk
// when it is closed (auto_da_alloc), which made a parser's input cost 3 ms instead of 0.1.
std::string writeInputFile(const std::string& dir, const std::string& stem,
                           const std::string& content);

// A few values of each kind that parsers get wrong: limits of int, int64 and uint64 and
// one past them, huge and tiny floats, signs, hex, non-numbers.
const std::vector<std::string>& interestingNumbers();

}  // namespace ddp::testing::fuzz
