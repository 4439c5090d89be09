"""SIGKILL during a background checkpoint write (Note [Asynchronous saves],
runtime/train/checkpointer.h): the previous checkpoint stays valid and the run resumes from it.

ddptrain trains a GPT of about 12.6M parameters (a checkpoint of about 150 MB, written in
the background every 3 steps). When a write is under way (its hidden temporary has grown
past 1 MB) the process is killed with SIGKILL. Then:
  - the interrupted checkpoint has no manifest and its temporary is left as it was;
  - the newest checkpoint with a manifest verifies (size and CRC-32) and Python's
    torch.load reads it;
  - ddptrain run again with --resume auto resumes from that one, removes the temporary
    and finishes.

usage: checkpoint_kill_test.py DDPTRAIN PYTHON_IS_THIS_ONE
"""
import json
import os
import pathlib
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

import torch

DDPTRAIN = sys.argv[1] if len(sys.argv) > 1 else "build/examples/ddptrain"
WRITE_UNDER_WAY = 1 << 20  # bytes of the temporary: a write is in progress
DEADLINE_S = 240


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def crc32_of(path):
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


class CheckpointKillTest(unittest.TestCase):
    def setUp(self):
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="ddprun_kill_"))
        self.dir = self.tmp / "checkpoints"
        words = ["data", "parallel", "training", "rank", "gradient", "bucket", "store", "ring"]
        rng = random.Random(0)
        self.text = self.tmp / "corpus.txt"
        self.text.write_text(" ".join(rng.choice(words) for _ in range(40000)))

    def tearDown(self):
        subprocess.run(["rm", "-rf", str(self.tmp)])

    def ddptrain(self, max_steps, log):
        env = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), GLOO_SOCKET_IFNAME="lo",
                   OMP_NUM_THREADS="1")
        args = [DDPTRAIN, "--model", "gpt", "--gpt-layers", "4", "--gpt-embedding", "512",
                "--gpt-heads", "8", "--data", "text", "--data-path", str(self.text),
                "--block-size", "16", "--batch-size", "2", "--max-steps", str(max_steps),
                "--log-every", "1", "--checkpoint-dir", str(self.dir), "--checkpoint-every", "3",
                "--keep-checkpoints", "2"]
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)

    def test_sigkill_during_a_background_write_leaves_the_previous_checkpoint_resumable(self):
        log_path = self.tmp / "first.log"
        with open(log_path, "w") as log:
            proc = self.ddptrain(1000, log)
            start = time.monotonic()
            killed_during = None
            while time.monotonic() - start < DEADLINE_S and proc.poll() is None:
                done = sorted(self.dir.glob("checkpoint-*.pt.json")) if self.dir.exists() else []
                temps = [t for t in self.dir.glob(".checkpoint-*.pt.tmp")] if self.dir.exists() else []
                under_way = [t for t in temps if t.stat().st_size > WRITE_UNDER_WAY]
                if done and under_way:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_during = under_way[0]
                    killed_size = killed_during.stat().st_size
                    break
                time.sleep(0.005)
            proc.wait(timeout=60)
        text = log_path.read_text()
        self.assertIsNotNone(killed_during, f"no background write was caught in {DEADLINE_S} s:\n{text[-3000:]}")
        self.assertEqual(proc.returncode, -signal.SIGKILL)
        step_killed = int(re.search(r"checkpoint-(\d+)\.pt", killed_during.name).group(1))
        # The write was a background one: its snapshot was logged and training had gone on.
        self.assertRegex(text, rf"event=snapshot step={step_killed} ")
        after = text[text.index(f"event=snapshot step={step_killed} "):]
        trained_on = [int(s) for s in re.findall(r"\bstep=(\d+)/", after)]
        print(f"killed during the write of step {step_killed}: temporary at {killed_size} bytes; "
              f"steps trained meanwhile: {trained_on or 'none yet'}")

        # The interrupted checkpoint: a temporary, no manifest, no .pt.
        self.assertTrue(killed_during.exists())
        self.assertFalse((self.dir / f"checkpoint-{step_killed:08d}.pt.json").exists())
        self.assertFalse((self.dir / f"checkpoint-{step_killed:08d}.pt").exists())
        manifests = sorted(self.dir.glob("checkpoint-*.pt.json"))
        newest = json.loads(manifests[-1].read_text())
        pt = self.dir / newest["file"]
        self.assertLess(newest["step"], step_killed)
        self.assertEqual(pt.stat().st_size, newest["bytes"])
        self.assertEqual(crc32_of(pt), newest["crc32"])
        state = torch.load(pt)  # weights_only: plain dicts, lists and tensors
        self.assertEqual(state["step"], newest["step"])
        self.assertEqual(len(state["optimizer"]["state"]), len(state["model"]))
        print(f"newest valid: step {newest['step']}, {newest['bytes']} bytes, CRC-32 verified, torch.load read it")

        # Resume: from that one, the temporary cleaned away, to the end.
        resumed_log = self.tmp / "resumed.log"
        with open(resumed_log, "w") as log:
            proc = self.ddptrain(newest["step"] + 2, log)
            proc.wait(timeout=DEADLINE_S)
        resumed = resumed_log.read_text()
        self.assertEqual(proc.returncode, 0, resumed[-3000:])
        self.assertRegex(resumed, rf"event=resumed step={newest['step']} ")
        self.assertIn(f"event=removed_stale_temporary path={killed_during}", resumed)
        self.assertFalse(killed_during.exists())
        final = self.dir / f"checkpoint-{newest['step'] + 2:08d}.pt.json"
        self.assertTrue(final.exists(), sorted(p.name for p in self.dir.iterdir()))
        print(f"resumed from step {newest['step']} and finished at step {newest['step'] + 2}")


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
