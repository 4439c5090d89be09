// Note [How ddprun runs PROGRAM], rule by rule, on files made for each test: what the workers
// execute, and the errors that name what was tried. (ddprun_test.cpp runs real Python.)
#include "launcher/worker_program.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "launcher/launch_plan.h"

namespace ddp::launcher {
namespace {

namespace fs = std::filesystem;
using Argv = std::vector<std::string>;

class WorkerProgramTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("worker_program_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "bin");
    // A stand-in interpreter: only found, never run (the module rule runs one: see ddprun_test).
    python_ = write("bin/python3", "#!/bin/sh\n", 0755);
    env_ = {{"PATH", (dir_ / "bin").string() + ":/usr/bin:/bin"}};
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text, mode_t mode = 0644) {
    const auto path = (dir_ / name).string();
    std::ofstream(path) << text;
    ::chmod(path.c_str(), mode);
    return path;
  }
  WorkerProgram resolve(const Argv& program, const ProgramOptions& options = {}) {
    return resolveWorkerProgram(program, options, env_);
  }
  std::string errorOf(const Argv& program, const ProgramOptions& options = {}) {
    try {
      resolve(program, options);
    } catch (const LaunchError& e) {
      return e.what();
    }
    return "no LaunchError";
  }

  fs::path dir_;
  std::string python_;
  env::EnvMap env_;
};

TEST_F(WorkerProgramTest, APyFileRunsWithThePythonFoundInPath) {
  const auto script = write("train.py", "print(1)\n");
  const auto program = resolve({script, "--epochs", "2"});
  EXPECT_EQ(program.kind, ProgramKind::kPythonScript);
  EXPECT_EQ(program.argv, (Argv{python_, "-u", script, "--epochs", "2"}));
}

// torchrun prepends Python to a .py file whatever its mode bits and its #! line.
TEST_F(WorkerProgramTest, AnExecutablePyFileStillRunsWithPython) {
  const auto script = write("train.py", "#!/bin/sh\necho sh\n", 0755);
  EXPECT_EQ(resolve({script}).argv, (Argv{python_, "-u", script}));
}

TEST_F(WorkerProgramTest, TheInterpreterIsThePythonFlagElsePythonExec) {
  const auto script = write("train.py", "");
  const auto other = write("bin/other-python", "", 0755);
  EXPECT_EQ(resolve({script}, {.python = other}).argv.front(), other);
  EXPECT_EQ(errorOf({script}, {.python = "/no/such/python", .pythonOrigin = "PYTHON_EXEC"}),
            "PYTHON_EXEC=/no/such/python: expected a Python interpreter to run " + script +
                "; found no executable file at /no/such/python. Point PYTHON_EXEC at an "
                "interpreter (e.g. /usr/bin/python3, or a venv's bin/python).");
}

TEST_F(WorkerProgramTest, NoInterpreterInPathSaysWhatWasTried) {
  const auto script = write("train.py", "");
  env_ = {{"PATH", (dir_ / "empty").string()}};
  EXPECT_EQ(
      errorOf({script}),
      "no Python interpreter to run " + script +
          ": tried python3 and python in each directory of PATH=" + (dir_ / "empty").string() +
          ". Pass --python PATH (or set PYTHON_EXEC), or run a native program with "
          "--no-python.");
}

TEST_F(WorkerProgramTest, AMissingScriptNamesTheAbsolutePathTried) {
  const auto missing = (dir_ / "trian.py").string();
  EXPECT_EQ(errorOf({missing}),
            "Python script " + missing + ": expected a file; found nothing at " + missing +
                ". Check the path (it is relative to " + fs::current_path().string() + ").");
}

TEST_F(WorkerProgramTest, AnExecutableRunsDirectlyFromItsPathOrFromPath) {
  const auto binary = write("a.out",
                            "\x7f"
                            "ELF",
                            0755);
  EXPECT_EQ(resolve({binary, "x"}).kind, ProgramKind::kExecutable);
  EXPECT_EQ(resolve({binary, "x"}).argv, (Argv{binary, "x"}));
  write("bin/mytool", "#!/bin/sh\n", 0755);
  EXPECT_EQ(resolve({"mytool"}).argv, (Argv{"mytool"}));
}

TEST_F(WorkerProgramTest, ANonExecutableFileWithAPythonShebangRunsWithPython) {
  const auto script = write("train", "#!/usr/bin/env python3\nprint(1)\n");
  EXPECT_EQ(resolve({script}).argv, (Argv{python_, "-u", script}));
  const auto text = write("notes", "hello\n");
  EXPECT_EQ(errorOf({text}),
            "PROGRAM " + text + ": expected an executable or a Python script; " + text +
                " is neither executable nor a Python script (.py, or #! python). "
                "Make it executable (chmod +x), or name a Python script with .py.");
}

TEST_F(WorkerProgramTest, ADirectoryWithMainRunsWithPython) {
  fs::create_directories(dir_ / "app");
  write("app/__main__.py", "");
  const auto app = (dir_ / "app").string();
  EXPECT_EQ(resolve({app}).argv, (Argv{python_, "-u", app}));
}

// As in a shell, a name without '/' is a command in PATH; the error points at ./NAME.
TEST_F(WorkerProgramTest, ANameNotInPathButInTheWorkingDirectoryIsPointedAt) {
  const auto before = fs::current_path();
  fs::current_path(dir_);
  write("a.out", "", 0755);
  const auto message = errorOf({"a.out"});
  fs::current_path(before);
  EXPECT_EQ(message,
            "PROGRAM a.out: expected an executable or a Python script; found no "
            "executable file at 'a.out' in each directory of PATH=" +
                env_.at("PATH") + "; there is ./a.out in " + dir_.string() +
                ". Write ./a.out to run it from here.");
}

TEST_F(WorkerProgramTest, NoPythonExecutesEvenAPyFileAsItIs) {
  const auto script = write("run.py", "#!/bin/sh\n", 0755);
  EXPECT_EQ(resolve({script, "a"}, {.noPython = true}).argv, (Argv{script, "a"}));
  EXPECT_EQ(errorOf({"no-such-tool"}, {.noPython = true}),
            "--no-python no-such-tool: expected an executable file; found none at 'no-such-tool' "
            "in each directory of PATH=" +
                env_.at("PATH") + ". Check the path and its execute permission (chmod +x).");
}

TEST_F(WorkerProgramTest, RunPathRunsTheScriptWithRunpyAndWinsOverNoPython) {
  const auto script = write("train.py", "");
  const auto program = resolve({script, "--lr", "1"}, {.noPython = true, .runPath = true});
  EXPECT_EQ(program.kind, ProgramKind::kPythonRunPath);
  ASSERT_EQ(program.argv.size(), 7u);
  EXPECT_EQ((Argv{program.argv[0], program.argv[1], program.argv[2]}), (Argv{python_, "-u", "-c"}));
  EXPECT_NE(program.argv[3].find("runpy.run_path(sys.argv[0], run_name='__main__')"),
            std::string::npos);
  EXPECT_EQ((Argv{program.argv[4], program.argv[5], program.argv[6]}), (Argv{script, "--lr", "1"}));
}

TEST_F(WorkerProgramTest, ContradictoryModesAreRefused) {
  EXPECT_EQ(errorOf({"pkg.train"}, {.module = true, .noPython = true}),
            "-m/--module runs a module with Python, but --no-python was given too. Drop one of "
            "them.");
  EXPECT_EQ(errorOf({"pkg.train"}, {.module = true, .runPath = true}),
            "-m/--module runs a module with Python, but --run-path was given too. Drop one of "
            "them.");
  EXPECT_EQ(errorOf({}), "no PROGRAM given: ddprun [options] [--] PROGRAM [ARGS...]");
}

}  // namespace
}  // namespace ddp::launcher
