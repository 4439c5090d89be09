"""scripts/plot_metrics.py end to end: a metrics file in, a PNG or a clear error out.

- the format with run records: several runs in one file (a resumed run continues the
  steps), --run all, last and a run id prefix, an extra test_<metric>;
- the format before run records, as ddptrain writes it today (lines of a real 2-rank run
  below), read as one run, and as two when a fresh run was appended (the step goes back);
- bad input: a missing file, a line that is not JSON, no train records, an unknown run
  id, each exit 2 with a message naming what was expected and found, and no PNG.

Usage: plot_metrics_test.py REPO_DIR (run with the venv's Python: matplotlib)
"""
from __future__ import annotations

import json
import math
import pathlib
import shutil
import subprocess
import sys
import tempfile
import unittest

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
SCRIPT = REPO / "scripts" / "plot_metrics.py"
sys.path.insert(0, str(REPO / "tests" / "support"))
from png_file import png_size  # noqa: E402

# ddprun --standalone --nproc-per-node 2 -- ddptrain --model mlp --data synthetic
# --epochs 3 --batch-size 32 --log-every 10 --eval-every 40 --lr-schedule cosine
# --warmup-steps 20 --metrics-file F (the build of 2026-12-07, before run records): every
# 4th train line kept, the evaluations and the final line as written.
OLD_FORMAT = """\
{"epoch":0,"kind":"train","loss":2.3117506384849547,"lr":0.025,"samples_per_s":3775.162861410645,"step":10,"step_ms":16.952911}
{"epoch":0,"kind":"train","loss":2.272880756855011,"lr":0.048509619970998924,"samples_per_s":8463.82703153802,"step":40,"step_ms":7.5615912}
{"kind":"eval","step":40,"test_accuracy":0.1650390625,"test_loss":2.2607630491256714}
{"epoch":1,"kind":"train","loss":1.631325900554657,"lr":0.03683522627621608,"samples_per_s":6482.442799988259,"step":80,"step_ms":9.8728214}
{"kind":"eval","step":80,"test_accuracy":0.345703125,"test_loss":1.8824760913848877}
{"epoch":1,"kind":"train","loss":1.2473894149065017,"lr":0.0281876864133027,"samples_per_s":5825.894773234783,"step":100,"step_ms":10.985437000000001}
{"kind":"eval","step":120,"test_accuracy":0.4501953125,"test_loss":1.593530297279358}
{"kind":"eval","step":160,"test_accuracy":0.4814453125,"test_loss":1.4655719995498657}
{"kind":"final","samples_per_s":6526.998682525741,"step":192,"test_accuracy":0.494140625,"test_loss":1.4455217719078064}
"""

RUN_IDS = ("3f2a9c1e7b5d4e08a1c2d3e4f5a6b7c8", "9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e")


def run_records(run_id: str, first_step: int, last_step: int, start: float) -> list[dict]:
    """One run in the format with run records: its run record, a train window every 10
    steps, an evaluation every 50 and the final evaluation."""
    records = [{"kind": "run", "run_id": run_id, "start_time": "2026-12-07T17:00:00.123Z",
                "start_unix": start, "world_size": 2,
                "config": {"model": "cnn", "lr": 0.05, "batch_size": 64, "epochs": 2}}]
    for step in range(first_step + 10, last_step + 1, 10):
        time = start + step * 0.05
        records.append({"kind": "train", "run_id": run_id, "time": time, "epoch": step // 100,
                        "step": step, "loss": 2.3 * math.exp(-step / 80) + 0.2,
                        "lr": 0.025 * (1 + math.cos(math.pi * step / 300)),
                        "samples_per_s": 12000.0 + step, "step_ms": 4.2})
        if step % 50 == 0:
            records.append({"kind": "eval", "run_id": run_id, "time": time, "step": step,
                            "test_loss": 2.4 * math.exp(-step / 90) + 0.3,
                            "test_accuracy": 1 - 0.9 * math.exp(-step / 70), "test_top5": 0.99})
    records.append({"kind": "final", "run_id": run_id, "time": start + last_step * 0.05 + 1,
                    "step": last_step, "test_loss": 0.4, "test_accuracy": 0.9, "samples_per_s": 11500.0})
    return records


def two_runs() -> str:
    """The second run resumes the first: a new run id whose steps continue."""
    records = run_records(RUN_IDS[0], 0, 120, 1796662800.0) + run_records(RUN_IDS[1], 120, 300, 1796662830.0)
    return "".join(json.dumps(r) + "\n" for r in records)


class PlotMetricsTest(unittest.TestCase):
    def setUp(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="plot-metrics-test-"))
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

    def plot(self, text: str | None, *args: str, name: str = "m.jsonl"):
        metrics = self.dir / name
        if text is not None:
            metrics.write_text(text)
        png = self.dir / "out.png"
        png.unlink(missing_ok=True)
        out = subprocess.run([sys.executable, str(SCRIPT), str(metrics), "-o", str(png), *args],
                             capture_output=True, text=True, timeout=120)
        return out, png

    def assert_plotted(self, out, png, *run_ids: str):
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertGreater(png.stat().st_size, 10_000)
        self.assertEqual(png_size(png), (1200, 800))
        self.assertIn(f"({', '.join(run_ids)})", out.stdout)

    def assert_refused(self, out, png, *parts: str):
        self.assertEqual(out.returncode, 2, out.stdout + out.stderr)
        self.assertTrue(out.stderr.startswith("plot_metrics: "), out.stderr)
        for part in parts:
            self.assertIn(part, out.stderr)
        self.assertFalse(png.exists())

    def test_several_runs_in_one_file(self):
        self.assert_plotted(*self.plot(two_runs()), *RUN_IDS)  # --run all, the default
        self.assert_plotted(*self.plot(two_runs(), "--run", "last"), RUN_IDS[1])
        self.assert_plotted(*self.plot(two_runs(), "--run", RUN_IDS[0][:6]), RUN_IDS[0])

    def test_format_before_run_records(self):
        self.assert_plotted(*self.plot(OLD_FORMAT), "(no run id)")
        # A fresh run appended to the same file starts at step 10 again.
        self.assert_plotted(*self.plot(OLD_FORMAT + OLD_FORMAT), "(no run id)", "(no run id 2)")

    def test_missing_file(self):
        self.assert_refused(*self.plot(None, name="absent.jsonl"), "absent.jsonl: No such file",
                            "expected the JSON lines file that ddptrain --metrics-file wrote")

    def test_line_that_is_not_json(self):
        text = two_runs().splitlines(keepends=True)
        text[2] = text[2][:40] + "\n"  # cut short, as by a kill mid-write
        self.assert_refused(*self.plot("".join(text)), "m.jsonl:3: not JSON",
                            "expected one JSON object per line", "HINT")
        self.assert_refused(*self.plot("[1, 2]\n"), "m.jsonl:1: found a JSON list, expected an object")

    def test_no_train_records(self):
        evals_only = "".join(line + "\n" for line in OLD_FORMAT.splitlines() if '"train"' not in line)
        self.assert_refused(*self.plot(evals_only), "no train records in the file",
                            "found records of kind: 4 'eval', 1 'final'", "--log-every")
        self.assert_refused(*self.plot(""), "holds no records")

    def test_unknown_run_id(self):
        self.assert_refused(*self.plot(two_runs(), "--run", "abc"), "--run abc: no run of",
                            f"its runs are: {RUN_IDS[0]}, {RUN_IDS[1]}", "last or all")


if __name__ == "__main__":
    unittest.main()
