"""benchmarks/replot.py: the committed results JSON (benchmarks/results/*.json) drawn again
into a temporary directory, one valid PNG per benchmark, and nothing written beside the
committed tables; a benchmark without a chart and a JSON that cannot be read exit 2.

Usage: replot_test.py REPO_DIR (run with the venv's Python: matplotlib)
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tempfile
import unittest

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
SCRIPT = REPO / "benchmarks" / "replot.py"
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "tests" / "support"))
from png_file import png_size  # noqa: E402

CHARTS = ("ddp", "metrics_cost", "launch", "elastic", "faults", "checkpoint")


class ReplotTest(unittest.TestCase):
    def setUp(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="replot-test-"))
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

    def replot(self, *args: str):
        return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                              timeout=120)

    def test_every_committed_result(self):
        before = {p: p.stat().st_mtime_ns for p in RESULTS.iterdir()}
        out = self.replot("--out", str(self.dir))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()), sorted(f"{n}.png" for n in CHARTS))
        for name in CHARTS:
            png = self.dir / f"{name}.png"
            self.assertIn(f"wrote {png}", out.stdout)
            width, height = png_size(png)
            self.assertGreaterEqual(width, 1000, name)
            self.assertGreaterEqual(height, 300, name)
            # The committed table shows the chart the driver drew beside it.
            self.assertIn(f"![{name} chart]({name}.png)", (RESULTS / f"{name}.md").read_text())
        self.assertEqual(before, {p: p.stat().st_mtime_ns for p in RESULTS.iterdir()})

    def test_one_result_from_another_directory(self):
        results = self.dir / "results"
        results.mkdir()
        shutil.copy(RESULTS / "launch.json", results)
        out = self.replot("--results", str(results), "launch")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual([p.name for p in results.glob("*.png")], ["launch.png"])
        png_size(results / "launch.png")

    def test_refusals(self):
        out = self.replot("--out", str(self.dir), "nosuch")
        self.assertEqual(out.returncode, 2)
        self.assertIn("no chart for nosuch; the charts are ddp, metrics_cost, launch, elastic, faults, checkpoint", out.stderr)
        (self.dir / "ddp.json").write_text("{not json")
        out = self.replot("--results", str(self.dir), "ddp")
        self.assertEqual(out.returncode, 2)
        self.assertIn(f"replot: cannot read {self.dir / 'ddp.json'}", out.stderr)
        self.assertFalse((self.dir / "ddp.png").exists())


if __name__ == "__main__":
    unittest.main()
