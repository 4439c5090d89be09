#include "launcher/worker_program.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "launcher/launch_plan.h"
#include "runtime/env/value_parser.h"
#include "runtime/env/variables.h"

extern char** environ;

namespace ddp::launcher {
namespace {

namespace fs = std::filesystem;

// torchrun's run_script_path, as a worker's own interpreter runs it: sys.argv is the script
// and its arguments, as under `python SCRIPT ARGS`.
constexpr const char* kRunPathCode =
    "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], "
    "run_name='__main__')";

// Exit code of the module probe when the module is not there (not 1: a crash of the
// interpreter itself exits 1).
constexpr int kModuleMissingExit = 3;
constexpr const char* kModuleProbeCode =
    "import importlib.util, sys; "
    "sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 3)";

bool isRegularFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool isExecutableFile(const std::string& path) {
  return isRegularFile(path) && ::access(path.c_str(), X_OK) == 0;
}

bool endsWith(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Whether the first line is a #! naming python ("#!/usr/bin/env python3").
bool hasPythonShebang(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line) || line.rfind("#!", 0) != 0) return false;
  return line.find("python") != std::string::npos;
}

std::string absolute(const std::string& path) {
  std::error_code error;
  const auto result = fs::absolute(path, error);
  return error ? path : result.lexically_normal().string();
}

std::string workingDirectory() {
  std::error_code error;
  const auto path = fs::current_path(error);
  return error ? "the working directory" : path.string();
}

std::string pathVariable(const env::EnvMap& env) { return env::lookup(env, "PATH").value_or(""); }

std::vector<std::string> pathDirectories(const env::EnvMap& env) {
  auto dirs = env::splitList(pathVariable(env), ':');
  // An empty entry is the working directory, as for execvp.
  for (auto& dir : dirs) {
    if (dir.empty()) dir = ".";
  }
  return dirs;
}

// The executable file `name` names: itself when it has a '/', else the first in PATH.
std::optional<std::string> findExecutable(const std::string& name, const env::EnvMap& env) {
  if (name.find('/') != std::string::npos) {
    return isExecutableFile(name) ? std::optional(name) : std::nullopt;
  }
  for (const auto& dir : pathDirectories(env)) {
    const auto candidate = dir + "/" + name;
    if (isExecutableFile(candidate)) return candidate;
  }
  return std::nullopt;
}

std::string describePathSearch(const std::string& name, const env::EnvMap& env) {
  if (name.find('/') != std::string::npos) return absolute(name);
  return "'" + name + "' in each directory of PATH=" + pathVariable(env);
}

// The interpreter (Note [How ddprun runs PROGRAM]): --python, PYTHON_EXEC, python3, python.
std::string findPython(const ProgramOptions& options, const env::EnvMap& env,
                       const std::string& forWhat) {
  if (options.python) {
    if (auto found = findExecutable(*options.python, env)) return *found;
    throw LaunchError(options.pythonOrigin + "=" + *options.python +
                      ": expected a Python interpreter to run " + forWhat + "; found no " +
                      "executable file at " + describePathSearch(*options.python, env) +
                      ". Point " + options.pythonOrigin + " at an interpreter (e.g. " +
                      "/usr/bin/python3, or a venv's bin/python).");
  }
  for (const char* name : {"python3", "python"}) {
    if (auto found = findExecutable(name, env)) return *found;
  }
  throw LaunchError("no Python interpreter to run " + forWhat +
                    ": tried python3 and python in each directory of PATH=" + pathVariable(env) +
                    ". Pass --python PATH (or set PYTHON_EXEC), or run a native program with "
                    "--no-python.");
}

// The top-level package of `module` can be imported by `python` (run from here, as the
// workers will be). A dotted name's parents would be imported to look it up, which may take
// seconds (torch) or have side effects, so only the first component is checked.
void checkModuleFound(const std::string& python, const std::string& module) {
  const std::string topLevel = module.substr(0, module.find('.'));
  std::vector<std::string> argv{python, "-c", kModuleProbeCode, topLevel};
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  const int error = posix_spawn(&pid, python.c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    throw LaunchError("-m " + module + ": cannot execute the interpreter " + python + ": " +
                      std::strerror(error) + ". Pass --python PATH (or set PYTHON_EXEC).");
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  if (WIFEXITED(status) && WEXITSTATUS(status) == kModuleMissingExit) {
    throw LaunchError("-m " + module + ": expected a module " + python +
                      " can import; found no module named '" + topLevel + "' (searched from " +
                      workingDirectory() + " and " + python +
                      "'s sys.path). Run ddprun from the directory that holds it, add that "
                      "directory to PYTHONPATH, or install the package into that interpreter.");
  }
  throw LaunchError("-m " + module + ": " + python + " failed while looking the module up (" +
                    (WIFEXITED(status) ? "exit code " + std::to_string(WEXITSTATUS(status))
                                       : "signal " + std::to_string(WTERMSIG(status))) +
                    "; its stderr is above). Pass a working interpreter with --python PATH.");
}

WorkerProgram python(ProgramKind kind, std::string reason, const std::string& python,
                     std::vector<std::string> pythonArgs, const std::vector<std::string>& program) {
  WorkerProgram result{kind, {python, "-u"}, std::move(reason)};
  for (auto& a : pythonArgs) result.argv.push_back(std::move(a));
  result.argv.insert(result.argv.end(), program.begin() + 1, program.end());
  return result;
}

}  // namespace

std::string programKindName(ProgramKind kind) {
  switch (kind) {
    case ProgramKind::kExecutable:
      return "executable";
    case ProgramKind::kPythonScript:
      return "python-script";
    case ProgramKind::kPythonModule:
      return "python-module";
    case ProgramKind::kPythonRunPath:
      return "python-run-path";
  }
  return "unknown";
}

WorkerProgram resolveWorkerProgram(const std::vector<std::string>& program,
                                   const ProgramOptions& options, const env::EnvMap& env) {
  if (program.empty() || program.front().empty()) {
    throw LaunchError("no PROGRAM given: ddprun [options] [--] PROGRAM [ARGS...]");
  }
  const std::string& name = program.front();
  if (options.module && (options.noPython || options.runPath)) {
    throw LaunchError(std::string("-m/--module runs a module with Python, but ") +
                      (options.noPython ? "--no-python" : "--run-path") +
                      " was given too. Drop one of them.");
  }
  if (options.runPath) {
    // torchrun: --run-path takes precedence over --no-python.
    if (!isRegularFile(name)) {
      throw LaunchError("--run-path " + name + ": expected a Python script file; found " +
                        (fs::exists(name) ? "something else" : "nothing") + " at " +
                        absolute(name) + ".");
    }
    return python(ProgramKind::kPythonRunPath, "--run-path: runpy.run_path",
                  findPython(options, env, name), {"-c", kRunPathCode, name}, program);
  }
  if (options.module) {
    const auto interpreter = findPython(options, env, "-m " + name);
    checkModuleFound(interpreter, name);
    return python(ProgramKind::kPythonModule, "-m: python -m", interpreter, {"-m", name}, program);
  }
  if (options.noPython) {
    if (!findExecutable(name, env)) {
      throw LaunchError("--no-python " + name + ": expected an executable file; found none at " +
                        describePathSearch(name, env) +
                        ". Check the path and its execute permission (chmod +x).");
    }
    return WorkerProgram{ProgramKind::kExecutable, program, "--no-python"};
  }
  if (endsWith(name, ".py")) {
    if (!isRegularFile(name)) {
      throw LaunchError("Python script " + name + ": expected a file; found " +
                        (fs::exists(name) ? "something else" : "nothing") + " at " +
                        absolute(name) + ". Check the path (it is relative to " +
                        workingDirectory() + ").");
    }
    return python(ProgramKind::kPythonScript, "a .py file", findPython(options, env, name), {name},
                  program);
  }
  if (fs::is_directory(name) && isRegularFile(name + "/__main__.py")) {
    return python(ProgramKind::kPythonScript, "a directory with __main__.py",
                  findPython(options, env, name), {name}, program);
  }
  const bool hasSlash = name.find('/') != std::string::npos;
  // A name without '/' is a command in PATH, as in a shell: only a Python script of that
  // name here is taken from the working directory (torchrun runs `python NAME`).
  const std::string file = hasSlash ? name : "./" + name;
  if (isRegularFile(file) && !isExecutableFile(file) && hasPythonShebang(file)) {
    return python(ProgramKind::kPythonScript, "a #! python file without the execute bit",
                  findPython(options, env, name), {name}, program);
  }
  if (findExecutable(name, env)) {
    return WorkerProgram{ProgramKind::kExecutable, program, "an executable file"};
  }
  std::string found = "found no executable file at " + describePathSearch(name, env);
  std::string hint = "Check the name, or run a Python script as NAME.py.";
  if (isRegularFile(file) && !hasSlash) {
    found += "; there is " + file + " in " + workingDirectory();
    hint = "Write " + file + " to run it from here.";
  } else if (isRegularFile(file)) {
    found = absolute(file) + " is neither executable nor a Python script (.py, or #! python)";
    hint = "Make it executable (chmod +x), or name a Python script with .py.";
  }
  throw LaunchError("PROGRAM " + name + ": expected an executable or a Python script; " + found +
                    ". " + hint);
}

}  // namespace ddp::launcher
