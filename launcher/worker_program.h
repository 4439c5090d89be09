// What each worker executes: the user's PROGRAM [ARGS...] as torchrun would run it, decided
// once, before any worker starts, so that a missing script or interpreter is one usage
// error (exit 2) instead of N worker failures.
//
// Note [How ddprun runs PROGRAM]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// torchrun always prepends Python unless --no-python is given, so `torchrun ./a.out` fails;
// ddprun also runs native programs (ddptrain, a user's LibTorch binary) directly, so it
// decides by what PROGRAM is, first rule that matches:
//   --run-path           Python: runpy.run_path(PROGRAM) as __main__ (torchrun's run_path;
//                        PROGRAM is a file).
//   -m / --module        Python: `python -u -m PROGRAM ARGS` (its top-level package is looked
//                        up before any worker starts).
//   --no-python          PROGRAM is executed as it is (a path, or a name found in PATH).
//   PROGRAM ends in .py  a Python script, whatever its mode bits (as torchrun).
//   PROGRAM is a directory with __main__.py: Python runs it (`python DIR`).
//   a file with the execute bit (a path, or a name found in PATH): executed directly; the
//                        kernel runs an ELF binary or a script's #! interpreter.
//   a file without the execute bit whose first line is a #! naming python: Python runs it.
// Anything else is a usage error that says what was tried. A name without '/' is searched
// in PATH, as a shell does; a file of that name in the working directory is named in the
// error ("write ./NAME"), except a Python script, which is run as torchrun would.
// Python means `PYTHON -u ...`, -u as torchrun passes it (unbuffered output), where PYTHON is
// --python, else PYTHON_EXEC (torchrun's override), else python3, else python, in PATH.
// (torchrun uses its own sys.executable; ddprun has none.)
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "runtime/env/cluster_env.h"

namespace ddp::launcher {

enum class ProgramKind { kExecutable, kPythonScript, kPythonModule, kPythonRunPath };

// "executable", "python-script", "python-module", "python-run-path" (the --dry-run JSON).
std::string programKindName(ProgramKind kind);

// How the command line asks for PROGRAM to be run (launch_flags.h reads these).
struct ProgramOptions {
  bool module = false;    // -m / --module
  bool noPython = false;  // --no-python
  bool runPath = false;   // --run-path
  // --python or PYTHON_EXEC, and which of them ("--python", "PYTHON_EXEC").
  std::optional<std::string> python;
  std::string pythonOrigin = "--python";
};

struct WorkerProgram {
  ProgramKind kind = ProgramKind::kExecutable;
  std::vector<std::string> argv;  // what each worker executes
  std::string reason;             // why this kind, for the log and --dry-run
};

// Applies Note [How ddprun runs PROGRAM] to `program` (PROGRAM and its ARGS) with PATH from
// `env`. Throws LaunchError naming what was tried (paths, PATH) when PROGRAM, its module or
// the interpreter cannot be found.
WorkerProgram resolveWorkerProgram(const std::vector<std::string>& program,
                                   const ProgramOptions& options, const env::EnvMap& env);

}  // namespace ddp::launcher
