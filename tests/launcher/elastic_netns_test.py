"""ddprun's c10d rendezvous across emulated nodes (issue 15, item 6).

- test_node_death_and_rejoin: tests/launcher/elastic_scenario.py once: three nodes in
  network namespaces with --nnodes 2:3; node2 is killed mid-run, node0 and node1 re-form at
  world size 2 and resume from the checkpoint; node2 starts again and the group grows back
  to 3; all finish with exit 0 under --max-restarts 0. Prints the timeline (the 5-run
  numbers are benchmarks/elastic's). Needs root, as CI has.
- test_python_ddp_script: two ddprun on loopback with the c10d backend run a Python
  torch.distributed script (init_process_group("gloo") from the environment).

Usage: elastic_netns_test.py REPO_DIR DDPRUN DDPTRAIN PYTHON
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
DDPRUN = sys.argv.pop(1) if len(sys.argv) > 1 else str(REPO / "build/launcher/ddprun")
DDPTRAIN = sys.argv.pop(1) if len(sys.argv) > 1 else str(REPO / "build/examples/ddptrain")
PYTHON = sys.argv.pop(1) if len(sys.argv) > 1 else sys.executable

sys.path.insert(0, str(REPO / "tests/launcher"))
sys.path.insert(0, str(REPO / "tests/support"))
import elastic_scenario  # noqa: E402
from netns_hosts import netns_problem  # noqa: E402


class ElasticNetnsTest(unittest.TestCase):
    def workdir(self) -> pathlib.Path:
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="ddprun-elastic-"))
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        return tmp

    def test_node_death_and_rejoin(self):
        problem = netns_problem()
        self.assertEqual(problem, "", problem + "; run: sudo ctest -R launcher.elastic_netns")
        timeline = elastic_scenario.run(DDPRUN, DDPTRAIN, self.workdir())
        print("elastic timeline (s):", json.dumps(timeline), flush=True)
        # The survivors resumed from the newest checkpoint: the kill came at step 60's log
        # line, and checkpoint 60 may not have been written yet (every 10 steps) if rank 0
        # was on the killed node.
        self.assertGreaterEqual(timeline["first_logged_step_after_death"], 50)
        self.assertEqual(timeline["exit_codes"], {"node0": 0, "node1": 0, "node2": 0})

    def test_python_ddp_script(self):
        worker = REPO / "benchmarks/launch/launch_worker.py"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "MASTER_"))}
        command = [DDPRUN, "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
                   "--rdzv-id", "py", "--nnodes", "2", "--nproc-per-node", "2", "--rdzv-conf",
                   "last_call_timeout=1"]
        procs = [subprocess.Popen(command + ["--", PYTHON, str(worker), "--steps", "3"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
        outputs = [p.communicate(timeout=240)[0] for p in procs]
        for p, out in zip(procs, outputs):
            self.assertEqual(p.returncode, 0, out)
        ranks = sorted(int(m.group(1)) for out in outputs
                       for m in re.finditer(r"LAUNCH_BENCH impl=torch rank=(\d+) world_size=4 ", out))
        self.assertEqual(ranks, [0, 1, 2, 3], "\n".join(outputs))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    unittest.main(verbosity=2)
