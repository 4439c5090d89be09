#!/usr/bin/env python3
"""The fault matrix of issue 16: each fault injected into a small real training job
(ddprun + ddptrain, --model mlp on synthetic data, CPU, Gloo, loopback or network
namespaces), measured, and written as benchmarks/results/faults.{md,json,png}.

  run_fault_matrix.py [--build DIR | --ddprun PATH --ddptrain PATH] [--only NAME[,NAME]]
                      [--check] [--out FILE.md]

(the default --out is benchmarks/results/faults.md, the JSON and the PNG beside it (the
detection and exit times against their bounds as bars, benchmarks/plotting.py; without
matplotlib the PNG is left out); tests pass --out).

Per scenario the job runs in a fresh directory /tmp/ddpfault-<name>-<pid>-<n>/ (its
checkpoints, logs and error files). That path is in every command line of the scenario and
every launcher starts a session of its own (setsid), so "processes left" is every process
whose command line names the directory or whose session is one of the launchers'.

Columns (times in seconds on this machine's monotonic clock, from the lines as they arrive):
  detect_s       the fault (the kill, the remount, the prlimit; where nothing is injected
                 from outside, the culprit's own failure line) -> the first surviving rank
                 is seen to exit, or a launcher reports the failure or exits
  all_exit_s     the fault -> the last launcher of the scenario has exited (every rank gone)
  exit codes     each rank as ddprun reports it ("rank=R pid=P failed|stopped: ..."): a
                 number, or SIGKILL etc.; then each launcher's own exit code
  report         ddprun's "failed first" line and --error-file's rank/error/health
  steps_lost     the last step rank 0 printed - the newest valid checkpoint's step
  ckpt_lost      1 when no valid checkpoint (manifest present, size and CRC32 match) at or
                 after the newest one that existed at the fault remains; else 0
  procs_left     processes of the scenario alive 2 s after its last launcher exited
                 (they are then killed, so that the next scenario starts clean)

--check exits 1 when a row misses a target: a death seen and every rank gone <= 10 s
(hang: --hang-timeout + 10 s), 0 checkpoints lost, 0 processes left, the report names the
culprit, and the exit code the issue names where it names one.
Needs root for the tmpfs mounts and network namespaces (CI runs as root).
"""
from __future__ import annotations

import argparse
import atexit
import itertools
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))
sys.path.insert(0, str(REPO / "benchmarks"))
import machine  # noqa: E402  benchmarks/machine.py: the machine in every result
import plotting  # noqa: E402  benchmarks/plotting.py: the PNG beside the table

DEATH_BOUND_S = 10.0
HANG_TIMEOUT_S = 5.0
SCENARIO_CAP_S = 60.0
# --without-hang-timeout: run the hang rows without the flag, to see what a build without
# hang detection does (they then wait out --collective-timeout, and the cap ends them).
HANG_FLAG = True  # a scenario still running after this is killed and recorded as such

STEP_LINE = re.compile(r"\[train\] epoch=\d+ step=(\d+)/")
SAVED_LINE = re.compile(r"\[checkpoint\] event=saved step=(\d+)")
STARTED_LINE = re.compile(r"started ranks=(\d+)\.\.(\d+) pids=([\d,]+)")
RANK_EXIT_LINE = re.compile(r"rank=(\d+) pid=(\d+) (failed|stopped): (exit code (\d+)|signal (\d+))")
ALL_OK_LINE = re.compile(r"all (\d+) workers exited code=0")
FIRST_LINE = re.compile(r"ddprun: rank (\d+) \(local rank \d+, pid \d+\) failed first: .*")
# The one-line summary of a hang, desync or missing rank that issue 16 asks ddprun to print,
# whatever its exact wording turns out to be.
SUMMARY_LINE = re.compile(r"^ddprun: .*\b(stall|stalled|hang|hung|desync|never came|did not join)\b.*", re.I)
GROUP_READY_LINE = re.compile(r"event=group_ready")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sig_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Node:
    """One ddprun, its merged output with the time each line arrived, its exit."""

    def __init__(self, name: str, argv: list[str], log: pathlib.Path, env: dict | None = None):
        self.name = name
        self.argv = argv
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, errors="replace",
                                     start_new_session=True, env=env)
        self.pid = self.proc.pid
        self.exit_time: float | None = None
        self.returncode: int | None = None
        self._log = open(log, "w")
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            now = time.monotonic()
            with self.cond:
                self.lines.append((now, line.rstrip("\n")))
                self.cond.notify_all()
            self._log.write(f"{now:.3f} {line}")
        self.proc.wait()
        with self.cond:
            self.exit_time = time.monotonic()
            self.returncode = self.proc.returncode
            self.cond.notify_all()
        self._log.write(f"# exit {self.proc.returncode}\n")
        self._log.close()

    def wait_line(self, pattern: re.Pattern, timeout: float, start: int = 0):
        """The first match at line index >= start, or None at the timeout or the exit."""
        deadline = time.monotonic() + timeout
        i = start
        with self.cond:
            while True:
                while i < len(self.lines):
                    m = pattern.search(self.lines[i][1])
                    if m:
                        return m
                    i += 1
                if self.exit_time is not None or time.monotonic() >= deadline:
                    return None
                self.cond.wait(min(0.2, max(0.0, deadline - time.monotonic())))

    def wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.exit_time is None and time.monotonic() < deadline:
                self.cond.wait(0.2)
            return self.exit_time is not None

    def text(self) -> str:
        with self.cond:
            return "\n".join(line for _, line in self.lines)

    def matches(self, pattern: re.Pattern) -> list[tuple[float, re.Match]]:
        with self.cond:
            return [(t, m) for t, line in self.lines for m in [pattern.search(line)] if m]

    def rank_pids(self) -> dict[int, int]:
        found = self.matches(STARTED_LINE)
        if not found:
            return {}
        m = found[-1][1]
        pids = [int(p) for p in m.group(3).split(",")]
        return {int(m.group(1)) + i: pid for i, pid in enumerate(pids)}


# --- processes ----------------------------------------------------------------------------

def scenario_pids(token: str, sessions: set[int]) -> list[int]:
    """Live processes whose command line names token or whose session is one of sessions."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        state, session = fields[0], int(fields[3])
        if state == "Z":
            continue
        if token in cmdline or session in sessions:
            found.append(int(entry.name))
    return found


def describe_pids(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            comm = pathlib.Path(f"/proc/{pid}/comm").read_text().strip()
            state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            out.append(f"{pid} {comm} ({state})")
        except OSError:
            pass
    return out


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        for s in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, s)
            except ProcessLookupError:
                pass


# --- checkpoints --------------------------------------------------------------------------

def valid_checkpoints(directory: pathlib.Path) -> dict[int, str]:
    """step -> file of every checkpoint whose manifest matches its file (size, CRC32)."""
    valid = {}
    try:
        manifests = sorted(directory.glob("checkpoint-*.pt.json"))
    except OSError:
        return valid
    for manifest in manifests:
        try:
            meta = json.loads(manifest.read_text())
            data = (directory / meta["file"]).read_bytes()
        except (OSError, ValueError, KeyError):
            continue
        if len(data) == meta.get("bytes") and (zlib.crc32(data) & 0xFFFFFFFF) == meta.get("crc32"):
            valid[int(meta["step"])] = meta["file"]
    return valid


# --- one scenario -------------------------------------------------------------------------

class Scenario:
    """What a scenario function fills in; row() turns it into a table row."""

    def __init__(self, name: str, binaries: tuple[str, str], root: pathlib.Path):
        self.name = name
        self.binaries = binaries
        self.dir = root
        self.token = str(root)
        self.ckpt = root / "ckpt"
        self.ckpt.mkdir(parents=True, exist_ok=True)
        self.nodes: list[Node] = []
        self.fault_time: float | None = None
        self.fault_note = ""
        self.culprit: set[int] | None = None  # ranks the report may name; None: not applicable
        self.culprit_text: re.Pattern | None = None  # what the report must also say
        # The --error-file JSON must have the watchdog's "health" section (a hang, a stopped
        # rank, a desync: what only the watchdog sees), its culprit in self.culprit where set.
        # A death the launcher sees first is named by its "failed first" line instead.
        self.needs_health = False
        self.health_culprit: set[int] | None = None  # else self.culprit
        self.needs_final_checkpoint = False  # a stop (SIGTERM) must checkpoint its last step
        self.expected_codes: set[int] | None = None  # the launchers' exit codes
        self.bound_s = DEATH_BOUND_S
        self.ckpt_at_fault: int | None = None
        self.problems: list[str] = []  # why the row cannot pass, found while running it
        self.skipped = ""  # why the row cannot run on this machine (root, ip, mount)
        self.notes: list[str] = []
        self.cleanups: list = []
        self.worker_gone: dict[int, float] = {}  # rank -> when its process was gone
        self.stop_watch = threading.Event()
        self.cap_time: float | None = None  # when the driver killed what the cap found running

    @property
    def ddprun(self) -> str:
        return self.binaries[0]

    @property
    def ddptrain(self) -> str:
        return self.binaries[1]

    def launch(self, name: str, launcher_args: list[str], train_args: list[str] | None = None,
               env_extra: dict | None = None, wrap=None) -> Node:
        argv = [self.ddprun, "--log-level", "debug", "--error-file", str(self.dir / f"{name}.error.json"),
                "--backend", "gloo"] + launcher_args + ["--", self.ddptrain] + self.train_args(train_args)
        if wrap:
            argv = wrap(argv)
        env = dict(os.environ, OMP_NUM_THREADS="1", DDPRUN_FAULT_SCENARIO=self.token)
        env.pop("DDPRUN_ERROR_FILE", None)
        env.update(env_extra or {})
        node = Node(name, argv, self.dir / f"{name}.log", env)
        self.nodes.append(node)
        return node

    def train_args(self, extra: list[str] | None) -> list[str]:
        return ["--model", "mlp", "--data", "synthetic", "--max-steps", "3000", "--log-every", "1",
                "--checkpoint-every", "25", "--checkpoint-dir", str(self.ckpt), "--threads", "1",
                "--backend", "gloo"] + (extra or [])

    def inject(self, note: str, action, timed_from_failure: bool = False) -> None:
        """Runs action (the fault) and notes its time and the newest valid checkpoint.
        timed_from_failure: the fault shows only later (a memory limit bites at the next
        allocation that needs a new mapping): time from the culprit's own failure instead."""
        self.ckpt_at_fault = max(valid_checkpoints(self.ckpt), default=None)
        self.watch_workers()
        self.fault_time = None if timed_from_failure else time.monotonic()
        self.fault_note = note
        action()

    def watch_workers(self) -> None:
        """Notes when each worker the launchers started is gone (exited and reaped, or a
        zombie): the only clock there is when the launcher itself is what died."""
        pids = {pid: rank for node in self.nodes for rank, pid in node.rank_pids().items()}

        def alive(pid: int) -> bool:
            try:
                stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return False
            return stat.rsplit(")", 1)[1].split()[0] != "Z"

        def poll():
            while len(self.worker_gone) < len(pids) and not self.stop_watch.is_set():
                for pid, rank in pids.items():
                    if rank not in self.worker_gone and not alive(pid):
                        self.worker_gone[rank] = time.monotonic()
                time.sleep(0.02)
        threading.Thread(target=poll, daemon=True).start()

    def wait_checkpoint(self, node: Node, count: int = 1, timeout: float = 30.0) -> bool:
        """Waits for the count-th "event=saved" line of node."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(node.matches(SAVED_LINE)) >= count:
                return True
            if node.exit_time is not None:
                break
            time.sleep(0.05)
        self.problems.append(f"no checkpoint #{count} from {node.name} within {timeout:.0f} s "
                             f"(launcher exit {node.returncode})")
        return False

    def missing_feature(self, node: Node, flag: str) -> bool:
        """True (and a problem noted) when the launcher exited at once refusing flag."""
        node.wait_exit(3.0)
        if node.exit_time is not None and node.returncode == 2 and flag in node.text():
            self.problems.append(f"this build does not know {flag}: ddprun exits 2 ("
                                 + node.text().strip().splitlines()[-1][:160] + ")")
            return True
        return False


def binary_stamps(binaries: tuple[str, str]) -> dict[str, tuple[int, int]]:
    """(mtime, size) of the binaries and of the project's own shared libraries they load
    (not the system's or the torch wheel's): a rebuild beside the matrix swaps them under a
    running job (exit 127, SIGSEGV), and a row measured across a swap means nothing."""
    paths = set(binaries)
    for binary in binaries:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        for m in re.finditer(r"=> (/\S+)", out):
            lib = m.group(1)
            if "site-packages" not in lib and not lib.startswith(("/lib", "/usr/lib")):
                paths.add(lib)
    stamps = {}
    for path in sorted(paths):
        try:
            st = os.stat(path)
            stamps[path] = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamps[path] = (0, 0)
    return stamps


def snapshot(binaries: tuple[str, str]) -> tuple[str, str]:
    """Copies of the binaries and the project's libraries in /tmp/ddpfault-bin-<pid>/."""
    root = pathlib.Path(f"/tmp/ddpfault-bin-{os.getpid()}")
    shutil.rmtree(root, ignore_errors=True)
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    (root / "lib").mkdir(parents=True)
    for path in binary_stamps(binaries):
        if path not in binaries:
            shutil.copy2(path, root / "lib" / pathlib.Path(path).name)
    copies = tuple(str(shutil.copy2(b, root / pathlib.Path(b).name)) for b in binaries)
    os.environ["LD_LIBRARY_PATH"] = ":".join(
        x for x in (str(root / "lib"), os.environ.get("LD_LIBRARY_PATH", "")) if x)
    print(f"snapshot of {', '.join(binaries)} and their project libraries in {root}", flush=True)
    return copies  # type: ignore[return-value]


def hang_setting(s: Scenario) -> tuple[list[str], dict]:
    """ddprun's --hang-timeout where this build has it, else the workers' own variable
    DDPRUN_HANG_TIMEOUT (set for the whole job); nothing with --without-hang-timeout."""
    if not HANG_FLAG:
        s.notes.append("run without a hang timeout")
        return [], {}
    if has_flag(s.ddprun, "--hang-timeout"):
        return ["--hang-timeout", str(int(HANG_TIMEOUT_S))], {}
    s.notes.append(f"ddprun has no --hang-timeout: DDPRUN_HANG_TIMEOUT={int(HANG_TIMEOUT_S)} set instead")
    return [], {"DDPRUN_HANG_TIMEOUT": str(int(HANG_TIMEOUT_S))}


def has_flag(binary: str, flag: str) -> bool:
    out = subprocess.run([binary, "--help"], capture_output=True, text=True)
    return flag in out.stdout + out.stderr


# --- the scenarios ------------------------------------------------------------------------
# Each gets a Scenario, starts its job, injects the fault and returns; run_scenario()
# then waits for every launcher and measures.

def sc_sigkill_worker(s: Scenario) -> None:
    node = s.launch("node0", ["--standalone", "--nproc-per-node", "2"])
    if not s.wait_checkpoint(node, 2):
        return
    pid = node.rank_pids()[1]
    s.culprit = {1}
    s.expected_codes = {137, 200}
    s.inject("SIGKILL rank 1", lambda: os.kill(pid, signal.SIGKILL))


def sc_sigkill_launcher(s: Scenario) -> None:
    node = s.launch("node0", ["--standalone", "--nproc-per-node", "2"])
    if not s.wait_checkpoint(node, 2):
        return
    s.culprit = None  # the launcher is gone: nothing is left to report
    s.notes.append("no report and no rank exit codes: the launcher itself was killed; "
                   "the time is until every worker process was gone (the guardian's kill)")
    s.inject("SIGKILL ddprun", lambda: os.kill(node.pid, signal.SIGKILL))


def sc_sigstop_worker(s: Scenario) -> None:
    s.needs_health = True
    s.bound_s = HANG_TIMEOUT_S + DEATH_BOUND_S
    flags, env = hang_setting(s)
    node = s.launch("node0", ["--standalone", "--nproc-per-node", "2"] + flags, env_extra=env)
    if s.missing_feature(node, "--hang-timeout") or not s.wait_checkpoint(node, 2):
        return
    pid = node.rank_pids()[1]
    s.culprit = {1}
    s.culprit_text = re.compile(r"stall|hang|hung|stopped", re.I)
    # The survivors exit 200; the stopped rank cannot exit by itself: whoever ends it
    # (SIGKILL) decides the launcher's code, so none is required here.
    s.expected_codes = None
    s.inject("SIGSTOP rank 1", lambda: os.kill(pid, signal.SIGSTOP))


def sc_link_cut(s: Scenario) -> None:
    s.needs_health = True
    s.bound_s = HANG_TIMEOUT_S + DEATH_BOUND_S
    flags, env = hang_setting(s)
    from netns_hosts import NetnsHosts, netns_problem, sh
    problem = netns_problem()
    if problem:
        s.skipped = problem
        return
    hosts = NetnsHosts(["node0", "node1"], tag="ddpflt").__enter__()
    s.cleanups.append(hosts.__exit__)
    port = 29500
    for rank, name in enumerate(hosts.names):
        s.launch(name, ["--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
                        "--master-addr", hosts.ip["node0"], "--master-port", str(port)]
                 + flags, env_extra=env,
                 wrap=lambda argv, name=name: hosts.argv(name, argv))
    if s.missing_feature(s.nodes[0], "--hang-timeout") or not s.wait_checkpoint(s.nodes[0], 2):
        return
    s.culprit = {0, 1}  # the link is between the two: either side may be named
    s.culprit_text = re.compile(r"stall|hang|hung|unreachable|link|network", re.I)
    s.expected_codes = {200}
    s.inject("ip link set down node1's switch port",
             lambda: sh("ip", "-n", hosts.switch, "link", "set", "v1", "down"))


def sc_master_sigterm(s: Scenario) -> None:
    port = free_port()
    for rank in range(2):
        s.launch(f"node{rank}", ["--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
                                 "--master-addr", "127.0.0.1", "--master-port", str(port)])
    if not s.wait_checkpoint(s.nodes[0], 2):
        return
    s.culprit = None
    s.culprit_text = re.compile(r"SIGTERM")
    s.expected_codes = {143, 200}
    s.needs_final_checkpoint = True
    s.inject("SIGTERM node0's ddprun (the master)", lambda: os.kill(s.nodes[0].pid, signal.SIGTERM))


def _tmpfs(s: Scenario, size: str) -> bool:
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "ddpfault", str(s.ckpt)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        s.skipped = f"cannot mount a tmpfs (needs root): {out.stderr.strip()}"
        return False
    s.cleanups.append(lambda: subprocess.run(["umount", "-l", str(s.ckpt)], capture_output=True))
    return True


def sc_disk_full(s: Scenario) -> None:
    # A checkpoint is 1.9 MB (mlp): two fit in 5 MB, the third's temporary file does not.
    if not _tmpfs(s, "5m"):
        return
    node = s.launch("node0", ["--standalone", "--nproc-per-node", "2"])
    if not s.wait_checkpoint(node, 2):
        return
    s.culprit = {0}
    s.culprit_text = re.compile(r"No space left|ENOSPC|space", re.I)
    s.expected_codes = None  # the issue names none; 200 (transient) is what the runtime uses
    s.ckpt_at_fault = max(valid_checkpoints(s.ckpt), default=None)
    # Nothing is injected from outside: the fault is the culprit's failure line.


def sc_read_only_dir(s: Scenario) -> None:
    if not _tmpfs(s, "64m"):
        return
    node = s.launch("node0", ["--standalone", "--nproc-per-node", "2"])
    if not s.wait_checkpoint(node, 1):
        return
    s.culprit = {0}
    s.culprit_text = re.compile(r"Read-only|EROFS", re.I)
    # 200: a volume that turns read-only mid-run may come back after a reschedule; the
    # next attempt's start-up check exits 2 if it is still read-only (issue 14).
    s.expected_codes = {2, 200}

    def remount():
        out = subprocess.run(["mount", "-o", "remount,ro", str(s.ckpt)], capture_output=True, text=True)
        if out.returncode != 0:
            s.problems.append(f"remount ro failed: {out.stderr.strip()}")
    s.inject("mount -o remount,ro the checkpoint tmpfs", remount)


def sc_oom(s: Scenario) -> None:
    # RLIMIT_AS of rank 1 lowered to what it has mapped now: its next large tensor (a
    # gradient, > glibc's mmap threshold) cannot be mapped, std::bad_alloc.
    # glibc's mmap threshold fixed at 128 KiB (it grows with each freed mapping otherwise,
    # and a steady training loop then maps nothing new): every tensor above it is a new
    # mapping, so the limit bites at the next step, not at some later growth.
    # DDPRUN_HOST_ALLOCATOR=system: ddprun's own thresholds (Note [Keep freed tensor
    # memory]) would keep freed memory mapped for reuse, and the limit would bite much later.
    node = s.launch("node0", ["--standalone", "--nproc-per-node", "2"],
                    env_extra={"MALLOC_MMAP_THRESHOLD_": "131072", "DDPRUN_HOST_ALLOCATOR": "system"})
    if not s.wait_checkpoint(node, 2):
        return
    pid = node.rank_pids()[1]
    s.culprit = {1}
    s.culprit_text = re.compile(r"alloc|memory|OOM", re.I)
    s.expected_codes = {3}

    def limit():
        vm = next(int(line.split()[1]) * 1024 for line in
                  pathlib.Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmSize:"))
        s.notes.append(f"RLIMIT_AS of rank 1 = {vm >> 20} MiB (its VmSize)")
        subprocess.run(["prlimit", f"--pid={pid}", f"--as={vm}"], check=True)
    s.inject("prlimit --as=<VmSize> on rank 1 (timed from its failure)", limit, timed_from_failure=True)


def sc_nan_loss(s: Scenario) -> None:
    node = s.launch("node0", ["--standalone", "--nproc-per-node", "2"],
                    ["--lr", "1e6", "--checkpoint-every", "1"])
    s.culprit = {0, 1}  # the loss is the same on both ranks (averaged gradients)
    s.culprit_text = re.compile(r"nan|non-?finite|inf", re.I)
    s.expected_codes = {3}
    s.ckpt_at_fault = None
    node.wait_exit(SCENARIO_CAP_S)


def sc_desync(s: Scenario) -> None:
    s.needs_health = True
    # The test-only switch (Note [Injected faults] in runtime/train/trainer.cpp); the brief's
    # first name for it, DDPRUN_TEST_DESYNC, is set as well.
    node = s.launch("node0", ["--standalone", "--nproc-per-node", "2"], ["--max-steps", "300"],
                    env_extra={"DDPRUN_TEST_FAULT": "desync:1:60", "DDPRUN_TEST_DESYNC": "1:60"})
    s.culprit = {0, 1}
    s.culprit_text = re.compile(r"desync", re.I)
    s.expected_codes = {5}
    node.wait_exit(SCENARIO_CAP_S)
    if node.returncode == 0:
        s.problems.append("the job finished with 0: DDPRUN_TEST_FAULT=desync:1:60 had no effect "
                          "(the test-only switch is not in this build)")


def sc_sigkill_1_of_8(s: Scenario) -> None:
    node = s.launch("node0", ["--standalone", "--nproc-per-node", "8"], ["--checkpoint-every", "10"])
    if not s.wait_checkpoint(node, 2, timeout=60):
        return
    pid = node.rank_pids()[3]
    s.culprit = {3}
    s.expected_codes = {137, 200}
    s.inject("SIGKILL rank 3 of 8", lambda: os.kill(pid, signal.SIGKILL))


def sc_sigkill_remote_worker(s: Scenario) -> None:
    # Two nodes of 4 ranks on loopback; rank 6 (node1) is killed. node1's launcher sees its
    # worker die and stops its own group; node0's four ranks must find out by themselves
    # (a peer gone in the middle of an allreduce): the teardown hang of issue 16 (a).
    port = free_port()
    for rank in range(2):
        s.launch(f"node{rank}", ["--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "4",
                                 "--master-addr", "127.0.0.1", "--master-port", str(port)],
                 ["--checkpoint-every", "10"])
    if not s.wait_checkpoint(s.nodes[0], 2, timeout=60):
        return
    pid = s.nodes[1].rank_pids()[6]
    s.culprit = {6}
    s.expected_codes = {137, 200}
    s.inject("SIGKILL rank 6 of 8 (node1)", lambda: os.kill(pid, signal.SIGKILL))


def sc_sigterm_rendezvous(s: Scenario) -> None:
    port = free_port()
    node = s.launch("node0", ["--nnodes", "2", "--node-rank", "0", "--nproc-per-node", "1",
                              "--master-addr", "127.0.0.1", "--master-port", str(port)])
    if not node.wait_line(STARTED_LINE, 15):
        s.problems.append("node0 never started its worker")
        return
    time.sleep(2.0)  # the worker waits in the rendezvous for node 1, which never comes
    if node.matches(GROUP_READY_LINE) or node.exit_time is not None:
        s.problems.append("node0's worker was not waiting in the rendezvous when SIGTERM was due")
        return
    s.culprit = None
    s.culprit_text = re.compile(r"SIGTERM")
    s.expected_codes = {143}
    s.inject("SIGTERM node0's ddprun while it waits for node 1",
             lambda: os.kill(node.pid, signal.SIGTERM))


def sc_worker_never_comes(s: Scenario) -> None:
    rdzv_timeout = 5
    s.bound_s = rdzv_timeout + DEATH_BOUND_S
    port = free_port()
    node = s.launch("node0", ["--nnodes", "2", "--node-rank", "0", "--nproc-per-node", "1",
                              "--master-addr", "127.0.0.1", "--master-port", str(port),
                              "--rdzv-timeout", str(rdzv_timeout)])
    # The report is rank 0's (the only one there): it must name rank 1 as the one missing.
    s.culprit = None
    s.culprit_text = re.compile(r"rank 1\b[^\n]{0,80}(never came|did not (come|join)|missing|absent)", re.I)
    s.health_culprit = {1}
    s.expected_codes = None
    if not node.wait_line(STARTED_LINE, 15):
        s.problems.append("node0 never started its worker")
        return
    s.inject("node 1 never starts (timed from node0's worker start)", lambda: None)


SCENARIOS = {
    "sigkill_worker": (sc_sigkill_worker, "SIGKILL of a worker"),
    "sigkill_launcher": (sc_sigkill_launcher, "SIGKILL of the launcher"),
    "sigstop_worker": (sc_sigstop_worker, "SIGSTOP of a worker (--hang-timeout 5)"),
    "link_cut": (sc_link_cut, "the link between two nodes cut (netns, --hang-timeout 5)"),
    "master_sigterm": (sc_master_sigterm, "the master evicted (SIGTERM)"),
    "disk_full": (sc_disk_full, "disk full during a checkpoint (5 MB tmpfs)"),
    "read_only_dir": (sc_read_only_dir, "read-only checkpoint directory (remount,ro)"),
    "oom": (sc_oom, "out of memory (RLIMIT_AS of one worker)"),
    "nan_loss": (sc_nan_loss, "NaN loss (--lr 1e6)"),
    "desync": (sc_desync, "desync (DDPRUN_TEST_FAULT=desync:1:60)"),
    "sigkill_1_of_8": (sc_sigkill_1_of_8, "SIGKILL of one of 8 ranks"),
    "sigkill_remote_worker": (sc_sigkill_remote_worker, "SIGKILL of one of 8 ranks, 2 nodes x 4: "
                              "node0's ranks must see it themselves"),
    "sigterm_rendezvous": (sc_sigterm_rendezvous, "SIGTERM during rendezvous"),
    "worker_never_comes": (sc_worker_never_comes, "a worker that never comes (--rdzv-timeout 5)"),
}


# --- measuring ----------------------------------------------------------------------------

def error_file_summary(path: pathlib.Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    keep = {k: data.get(k) for k in ("rank", "exitCode", "signalName", "error", "health")}
    if keep["health"] is None and isinstance(data.get("ddprun_health"), dict):
        keep["health"] = data["ddprun_health"]  # the workers' name for the section
    if isinstance(keep["health"], dict):  # the verdict, not the flight records and stacks
        keep["health"] = {k: v for k, v in keep["health"].items()
                          if k in ("verdict", "kind", "culprit", "step", "phase", "summary")}
    keep["consequences"] = len(data.get("consequences") or [])
    return keep


def run_scenario(name: str, binaries: tuple[str, str], serial: int) -> dict:
    root = pathlib.Path(f"/tmp/ddpfault-{name}-{os.getpid()}-{serial}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    s = Scenario(name, binaries, root)
    started = time.monotonic()
    try:
        try:
            SCENARIOS[name][0](s)
        except OSError as e:  # e.g. a binary being relinked beside us: ETXTBSY, EACCES
            s.problems.append(f"could not run the scenario: {e}")
        timed_out = False
        for node in s.nodes:
            left = SCENARIO_CAP_S - (time.monotonic() - started)
            if not node.wait_exit(max(0.0, left)):
                timed_out = True
        s.stop_watch.set()
        if timed_out:
            s.problems.append(f"still running after {SCENARIO_CAP_S:.0f} s: killed")
            s.cap_time = time.monotonic()
            for node in s.nodes:
                if node.exit_time is None:
                    kill_all(scenario_pids(s.token, {node.pid}))
            for node in s.nodes:
                node.wait_exit(5)
        time.sleep(2.0)  # what the launchers' teardown leaves behind has had its chance
        sessions = {n.pid for n in s.nodes}
        left = scenario_pids(s.token, sessions)
        left_described = describe_pids(left)
        kill_all(left)
        return measure(s, left_described, timed_out)
    finally:
        for cleanup in reversed(s.cleanups):
            try:
                cleanup()
            except Exception as e:  # noqa: BLE001: a cleanup must not hide the row
                print(f"{name}: cleanup: {e}", file=sys.stderr)


def measure(s: Scenario, left: list[str], timed_out: bool) -> dict:
    exits: dict[int, tuple[float, str]] = {}  # rank -> (time, code) as its launcher reports it
    first_reports: list[tuple[float, str]] = []
    last_step = None
    for node in s.nodes:
        for t, m in node.matches(RANK_EXIT_LINE):
            code = m.group(5) if m.group(5) else sig_name(int(m.group(6)))
            exits.setdefault(int(m.group(1)), (t, code))
        for t, m in node.matches(ALL_OK_LINE):
            for rank in node.rank_pids():
                exits.setdefault(rank, (t, "0"))
        for t, m in node.matches(FIRST_LINE):
            first_reports.append((t, m.group(0)))
        for t, m in node.matches(SUMMARY_LINE):
            if not FIRST_LINE.search(m.group(0)):
                first_reports.append((t, m.group(0)))
        steps = node.matches(STEP_LINE)
        if steps:
            last_step = max(last_step or 0, max(int(m.group(1)) for _, m in steps))

    fault = s.fault_time
    failures = [t for t, code in exits.values() if code != "0"]
    if fault is None and failures:  # nothing injected from outside: the first failure
        fault = min(failures)
        s.fault_note = s.fault_note or "the culprit's own failure"
    injected = set()
    for note_rank in re.findall(r"rank (\d+)", s.fault_note):
        injected.add(int(note_rank))
    detect = None
    all_exit = None
    if fault is not None:
        seen = [t for r, (t, _) in exits.items() if r not in injected and t >= fault - 0.001]
        seen += [t for t, _ in first_reports]
        seen += [n.exit_time for n in s.nodes if n.exit_time is not None]
        seen += [t for r, t in s.worker_gone.items() if r not in injected]
        seen = [t for t in seen if t >= fault - 0.001 and (s.cap_time is None or t < s.cap_time)]
        if s.fault_time is None:  # the culprit's own failure is the fault: the others count
            culprit_times = sorted(failures)
            seen = [t for t in seen if t > culprit_times[0]] or culprit_times
        detect = round(min(seen) - fault, 2) if seen else None
        ends = [n.exit_time for n in s.nodes if n.exit_time is not None]
        all_exit = None
        if ends and len(ends) == len(s.nodes) and not timed_out:
            all_exit = round(max(ends + list(s.worker_gone.values())) - fault, 2)

    valid = valid_checkpoints(s.ckpt)
    newest = max(valid, default=None)
    if s.ckpt_at_fault is None:
        ckpt_lost = 0
    else:
        ckpt_lost = 0 if any(step >= s.ckpt_at_fault for step in valid) else 1
    steps_lost = None if last_step is None else last_step - (newest or 0)

    reports = {n.name: error_file_summary(s.dir / f"{n.name}.error.json") for n in s.nodes}
    report_text = "\n".join(n.text() for n in s.nodes)
    named = [line for _, line in first_reports]
    for node_name, r in reports.items():
        if r:
            health = r.get("health")
            named.append(f"{node_name} error file: rank {r['rank']}: {str(r.get('error'))[:200]}"
                         + (f"; health {json.dumps(health)}" if health else "; no health section"))

    row = {
        "scenario": s.name,
        "title": SCENARIOS[s.name][1],
        "fault": s.fault_note,
        "detect_s": detect,
        "all_exit_s": all_exit,
        "bound_s": s.bound_s,
        "rank_exit_codes": {str(r): code for r, (_, code) in sorted(exits.items())},
        "worker_gone_s": {str(r): round(t - fault, 3) for r, t in sorted(s.worker_gone.items())}
        if fault is not None else {},
        "launcher_exit_codes": {n.name: n.returncode for n in s.nodes},
        "report": named,
        "error_files": reports,
        "last_step": last_step,
        "newest_checkpoint": newest,
        "checkpoint_at_fault": s.ckpt_at_fault,
        "steps_lost": steps_lost,
        "checkpoints_lost": ckpt_lost,
        "processes_left": len(left),
        "processes_left_list": left,
        "timed_out": timed_out,
        "notes": s.notes,
        "logs": str(s.dir),
    }
    row["skipped"] = s.skipped
    row["misses"] = [] if s.skipped else misses(s, row, report_text, first_reports, reports)
    row["pass"] = not row["misses"] and not s.skipped
    return row


def misses(s: Scenario, row: dict, text: str, first_reports, reports) -> list[str]:
    out = list(s.problems)
    if out:
        return out
    if row["all_exit_s"] is None or row["all_exit_s"] > s.bound_s:
        out.append(f"every rank gone after {row['all_exit_s']} s (target <= {s.bound_s:.0f} s)")
    if row["checkpoints_lost"]:
        out.append(f"checkpoint lost: step {s.ckpt_at_fault} existed at the fault, newest valid now "
                   f"{row['newest_checkpoint']}")
    if s.needs_final_checkpoint and row["steps_lost"] != 0:
        out.append(f"no checkpoint of the last step on the way out: {row['steps_lost']} steps lost "
                   f"(last step {row['last_step']}, newest valid checkpoint {row['newest_checkpoint']})")
    if row["processes_left"]:
        out.append(f"{row['processes_left']} processes left: {', '.join(row['processes_left_list'])}")
    if s.expected_codes is not None:
        wrong = {k: v for k, v in row["launcher_exit_codes"].items() if v not in s.expected_codes}
        if wrong:
            out.append(f"launcher exit codes {wrong}, expected one of {sorted(s.expected_codes)}")
    if s.culprit is not None:
        named = {int(m) for _, line in first_reports for m in re.findall(r"ddprun: rank (\d+)", line)}
        named |= {r["rank"] for r in reports.values() if r and isinstance(r.get("rank"), int)}
        named |= {r["health"].get("culprit") for r in reports.values()
                  if r and isinstance(r.get("health"), dict)}
        if not named & s.culprit:
            out.append(f"the report names rank(s) {sorted(x for x in named if x is not None) or 'none'}, "
                       f"not the culprit {sorted(s.culprit)}")
    if s.needs_health:
        health = [r["health"] for r in reports.values() if r and isinstance(r.get("health"), dict)]
        expected = s.health_culprit or s.culprit
        if not health:
            out.append('no "health" section in the --error-file JSON (issue 16 item 2: '
                       'not in this build)')
        elif expected and not any(h.get("culprit") in expected for h in health):
            out.append(f"health names culprit {[h.get('culprit') for h in health]}, "
                       f"expected one of {sorted(expected)}")
    if s.culprit_text is not None:
        said = "\n".join(line for line in text.splitlines() if line.startswith("ddprun:") or
                         "[launcher]" in line)
        said += json.dumps(reports)
        if not s.culprit_text.search(said):
            out.append(f"the report does not say /{s.culprit_text.pattern}/")
    return out


# --- output -------------------------------------------------------------------------------

def cell(value) -> str:
    return "-" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[dict], build: str) -> str:
    lines = [
        "# Fault matrix (issue 16)",
        "",
        f"`benchmarks/faults/run_fault_matrix.py` on {build} (UTC mtimes), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores; mlp on synthetic data, CPU, Gloo. Targets: every rank gone <= "
        f"{DEATH_BOUND_S:.0f} s after a death (hang: --hang-timeout {HANG_TIMEOUT_S:.0f} + {DEATH_BOUND_S:.0f} s), "
        "0 checkpoints lost, 0 processes left, the report names the culprit.",
        "",
        "| scenario | fault | detect (s) | all exited (s) | bound (s) | rank exit codes | launcher exit codes "
        "| report names | steps lost | checkpoints lost | processes left | result |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ranks = " ".join(f"{k}:{v}" for k, v in r["rank_exit_codes"].items()) or "-"
        launchers = " ".join(f"{k}:{v}" for k, v in r["launcher_exit_codes"].items()) or "-"
        named = "<br>".join(cell(x)[:240] for x in r["report"]) or "-"
        result = ("skipped: " + r["skipped"] if r["skipped"] else
                  "pass" if r["pass"] else "FAIL: " + "; ".join(r["misses"]))
        if r["notes"]:
            result += " (" + "; ".join(r["notes"]) + ")"
        lines.append(
            f"| {r['scenario']} | {cell(r['fault'])} | {cell(r['detect_s'])} | {cell(r['all_exit_s'])} | "
            f"{r['bound_s']:.0f} | {ranks} | {launchers} | {named} | {cell(r['steps_lost'])} | "
            f"{r['checkpoints_lost']} | {r['processes_left']} | {cell(result)} |")
    lines += ["", "Columns: see the docstring of benchmarks/faults/run_fault_matrix.py.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="/work/main/build", help="build directory (launcher/ddprun, examples/ddptrain)")
    parser.add_argument("--only", default="", help="scenarios to run, comma-separated: " + ",".join(SCENARIOS))
    parser.add_argument("--ddprun", help="the launcher (default: BUILD/launcher/ddprun)")
    parser.add_argument("--ddptrain", help="the training program (default: BUILD/examples/ddptrain)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a row misses a target; 77 when every row was skipped "
                             "(no root, no ip: CTest's SKIP_RETURN_CODE)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "faults.md"),
                        help="the markdown table; the JSON goes beside it (.json)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the directory (logs, error files, checkpoints) of a row that "
                             "passes too; a failed row's is always kept")
    parser.add_argument("--snapshot", action="store_true",
                        help="copy the binaries and the project's own shared libraries to a "
                             "temporary directory first (LD_LIBRARY_PATH wins over their "
                             "RUNPATH), so that a rebuild beside the run cannot swap them")
    parser.add_argument("--without-hang-timeout", action="store_true",
                        help="run sigstop_worker and link_cut without --hang-timeout (a build "
                             "without hang detection: they then run into the 60 s cap)")
    args = parser.parse_args()
    global HANG_FLAG
    HANG_FLAG = not args.without_hang_timeout
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    build = pathlib.Path(args.build).resolve()
    binaries = (str(pathlib.Path(args.ddprun or build / "launcher" / "ddprun").resolve()),
                str(pathlib.Path(args.ddptrain or build / "examples" / "ddptrain").resolve()))
    for binary in binaries:
        if not os.access(binary, os.X_OK):
            parser.error(f"{binary} is not an executable: build ddprun and ddptrain, or pass --build")

    built = "; ".join(f"`{path}` {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(stamp[0] / 1e9))}"
                      for path, stamp in binary_stamps(binaries).items())
    if args.snapshot:
        binaries = snapshot(binaries)
    rows = []
    for serial, name in zip(itertools.count(), names):
        print(f"== {name}", flush=True)
        before = binary_stamps(binaries)
        row = run_scenario(name, binaries, serial)
        changed = [p for p, stamp in binary_stamps(binaries).items() if before.get(p) != stamp]
        if changed:
            row["misses"].insert(0, f"void: {', '.join(changed)} changed during the row (a rebuild?)")
            row["pass"] = False
        if row["pass"] and not args.keep:
            shutil.rmtree(row["logs"], ignore_errors=True)
            row["logs"] = None
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("detect_s", "all_exit_s", "rank_exit_codes",
                                               "launcher_exit_codes", "report", "steps_lost",
                                               "checkpoints_lost", "processes_left", "misses")},
                         indent=1), flush=True)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    host = machine.describe("/tmp")  # the scenarios' directories
    data = {"binaries": built, "snapshot": args.snapshot, "rows": rows, "machine": host}
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    # One run per row: no spread to report.
    out.write_text(markdown(rows, built) + "\n" + machine.line(host).lstrip("# ") + " (one run per row)\n"
                   + plotting.write_beside("faults", data, out))
    failed = [r["scenario"] for r in rows if not r["pass"] and not r["skipped"]]
    skipped = [r["scenario"] for r in rows if r["skipped"]]
    print(f"wrote {out} and {out.with_suffix('.json')}; {len(rows) - len(failed) - len(skipped)} of "
          f"{len(rows)} rows pass" + (f"; missed: {', '.join(failed)}" if failed else "")
          + (f"; skipped: {', '.join(skipped)}" if skipped else ""))
    if args.check and failed:
        return 1
    return 77 if args.check and len(skipped) == len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
