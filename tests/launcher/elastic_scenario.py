"""The elastic scenario of issue 15: three emulated nodes (network namespaces, see
tests/support/netns_hosts.py), each running

  ddprun --rdzv-backend c10d --rdzv-endpoint node0:29400 --rdzv-id job --nnodes 2:3
         --rdzv-conf last_call_timeout=5 --max-restarts 0 -- ddptrain --model mlp ...
         --checkpoint-every 10 --checkpoint-dir <shared dir>

node2 (not the host) is killed mid-run (SIGKILL to every process in its namespace: its
ddprun, the guardian and the workers); node0 and node1 must re-form at world size 2 and go
on from the checkpoint; node2 is started again and the group must grow back to 3; all
three finish. --max-restarts 0 proves that neither change spent a restart.

run() returns the timeline, in seconds on this machine's monotonic clock, measured from the
lines as they arrive:
  death_to_round       kill -> the survivors' first `event=rdzv_round ... nnodes=2`
  death_to_first_step  kill -> the first step line of that round (--log-every 5: a step
                       line is printed every 5 steps, so this is at most 5 steps late)
  join_to_round        node2 started again -> `event=rdzv_round ... nnodes=3`
  join_to_first_step   node2 started again -> the first step line of the grown round
"""
from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "support"))
from netns_hosts import NetnsHosts, sh  # noqa: E402

NODES = ["node0", "node1", "node2"]
STEP_LINE = re.compile(r"\[train\] epoch=\d+ step=(\d+)/")
ROUND_LINE = re.compile(r"event=rdzv_round round=(\d+) node_rank=\d+ nnodes=(\d+) world_size=(\d+)")


class Output:
    """Every line of every node, with the time it arrived, also written to a log per node."""

    def __init__(self, logs: pathlib.Path):
        self.logs = logs
        self.lines: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()

    def follow(self, node: str, proc: subprocess.Popen, incarnation: int) -> None:
        log = open(self.logs / f"{node}.{incarnation}.log", "w")

        def pump():
            for line in proc.stdout:
                with self.lock:
                    self.lines.append((time.monotonic(), node, line.rstrip("\n")))
                log.write(line)
                log.flush()
            log.close()

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, predicate, after: float, timeout: float, what: str) -> tuple[float, str, str]:
        """The first line after `after` for which predicate(node, line) holds."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            with self.lock:
                lines = self.lines[seen:]
                seen = len(self.lines)
            for t, node, line in lines:
                if t >= after and predicate(node, line):
                    return t, node, line
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; logs in {self.logs}")

    def text(self) -> str:
        with self.lock:
            return "\n".join(f"{t:.3f} {n} {l}" for t, n, l in self.lines)


def step_of(line: str) -> int | None:
    m = STEP_LINE.search(line)
    return int(m.group(1)) if m else None


def round_with(nnodes: int):
    def predicate(node, line):
        m = ROUND_LINE.search(line)
        return bool(m) and int(m.group(2)) == nnodes
    return predicate


def first_step(node, line):
    return step_of(line) is not None


def kill_node(hosts: NetnsHosts, node: str) -> None:
    """SIGKILL to every process in the node's network namespace: the node dies."""
    pids = sh("ip", "netns", "pids", hosts.ns[node], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def run(ddprun: str, ddptrain: str, workdir: pathlib.Path, max_steps: int = 1500,
        kill_at_step: int = 60) -> dict:
    checkpoints = workdir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    output = Output(workdir)
    command = [ddprun, "--rdzv-backend", "c10d", "--rdzv-endpoint", "node0:29400", "--rdzv-id", "job",
               "--nnodes", "2:3", "--rdzv-conf", "last_call_timeout=5", "--max-restarts", "0",
               "--grace-period", "5", "--", ddptrain, "--model", "mlp", "--data", "synthetic",
               "--max-steps", str(max_steps), "--log-every", "5", "--checkpoint-every", "10",
               "--checkpoint-dir", str(checkpoints)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "MASTER_", "RANK", "WORLD_SIZE"))}
    procs: dict[str, subprocess.Popen] = {}
    with NetnsHosts(NODES, tag="ddpel") as hosts:
        def start(node: str, incarnation: int) -> None:
            procs[node] = subprocess.Popen(hosts.argv(node, command), env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
            output.follow(node, procs[node], incarnation)

        try:
            start_time = time.monotonic()
            for node in NODES:
                start(node, 0)
            output.wait_for(round_with(3), start_time, 60, "the first round with 3 nodes")
            output.wait_for(lambda n, l: (step_of(l) or 0) >= kill_at_step, start_time, 120,
                            f"step {kill_at_step}")

            killed = time.monotonic()
            kill_node(hosts, "node2")
            procs["node2"].wait(timeout=10)
            shrunk_round, _, _ = output.wait_for(round_with(2), killed, 60, "the round with 2 nodes")
            shrunk_step, _, shrunk_line = output.wait_for(first_step, shrunk_round, 60,
                                                          "the first step at world size 2")
            output.wait_for(lambda n, l: "event=resumed" in l and "world_size=2 saved_world_size=3" in l,
                            shrunk_round, 5, "ddptrain's resume at world size 2")
            resumed_at = step_of(shrunk_line)

            rejoined = time.monotonic()
            start("node2", 1)
            grown_round, _, _ = output.wait_for(round_with(3), rejoined, 60, "the grown round with 3 nodes")
            grown_step, _, _ = output.wait_for(first_step, grown_round, 60, "the first step at world size 3")
            output.wait_for(lambda n, l: "event=resumed" in l and "world_size=3 saved_world_size=2" in l,
                            grown_round, 5, "ddptrain's resume at world size 3")

            codes = {node: proc.wait(timeout=600) for node, proc in procs.items()}
            time.sleep(0.5)  # the last lines
            if any(codes.values()):
                raise AssertionError(f"exit codes {codes}; logs in {workdir}")
            output.wait_for(lambda n, l: f"event=final step={max_steps}" in l, start_time, 5,
                            f"the final step {max_steps}")
            return {
                "death_to_round": shrunk_round - killed,
                "death_to_first_step": shrunk_step - killed,
                "join_to_round": grown_round - rejoined,
                "join_to_first_step": grown_step - rejoined,
                "first_logged_step_after_death": resumed_at,
                "exit_codes": codes,
            }
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
            for node in NODES:
                kill_node(hosts, node)
            (workdir / "timeline.log").write_text(output.text())
