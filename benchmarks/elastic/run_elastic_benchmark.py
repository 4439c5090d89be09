"""The elastic timeline over several runs (issue 15's targets: after a node's death, the
first step of the new round within 10 s; after a node joins, the grown group's first step
within 15 s, with last_call_timeout=5; in 5 of 5 runs).

Each run is tests/launcher/elastic_scenario.py: three nodes in network namespaces running
ddprun --rdzv-backend c10d --nnodes 2:3 with ddptrain (mlp, synthetic data, a checkpoint
every 10 steps); node2 is killed at step 60 and started again once the two survivors train.
Needs root. Writes benchmarks/results/elastic.{json,md,png} (the PNG: medians, maxima and
targets as bars, benchmarks/plotting.py).

Usage: run_elastic_benchmark.py [--runs 5] DDPRUN DDPTRAIN
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import shutil
import statistics
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests/launcher"))
import elastic_scenario  # noqa: E402

sys.path.insert(0, str(HERE.parent))
import machine  # noqa: E402  benchmarks/machine.py: the machine in every result
import plotting  # noqa: E402  benchmarks/plotting.py: the PNG beside the table

TARGETS = {"death_to_first_step": 10.0, "join_to_first_step": 15.0}
COLUMNS = ["death_to_round", "death_to_first_step", "join_to_round", "join_to_first_step"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("ddprun")
    parser.add_argument("ddptrain")
    args = parser.parse_args()
    runs = []
    host = machine.describe(tempfile.gettempdir())
    for i in range(args.runs):
        workdir = pathlib.Path(tempfile.mkdtemp(prefix="ddprun-elastic-bench-"))
        try:
            runs.append(elastic_scenario.run(args.ddprun, args.ddptrain, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"run {i + 1}: " + " ".join(f"{c}={runs[-1][c]:.2f}" for c in COLUMNS), flush=True)

    met = {k: sum(r[k] <= limit for r in runs) for k, limit in TARGETS.items()}
    lines = [f"# elastic timeline, {args.runs} runs, seconds (3 nodes in network namespaces, "
             f"--nnodes 2:3, last_call_timeout=5)",
             "# " + datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             machine.line(host),
             "#",
             "# run  " + "  ".join(f"{c:>20}" for c in COLUMNS)]
    for i, r in enumerate(runs, 1):
        lines.append(f"  {i:>3}  " + "  ".join(f"{r[c]:>20.2f}" for c in COLUMNS))
    lines.append("  min  " + "  ".join(f"{min(r[c] for r in runs):>20.2f}" for c in COLUMNS))
    lines.append("  max  " + "  ".join(f"{max(r[c] for r in runs):>20.2f}" for c in COLUMNS))
    lines.append("  med  " + "  ".join(f"{statistics.median(r[c] for r in runs):>20.2f}" for c in COLUMNS))
    for k, limit in TARGETS.items():
        lines.append(f"# {k} <= {limit:g} s: {met[k]} of {args.runs} runs")
    table = "\n".join(lines)
    print(table)
    results = REPO / "benchmarks/results"
    data = {"targets": TARGETS, "runs": runs, "met": met, "machine": host}
    (results / "elastic.json").write_text(json.dumps(data, indent=2) + "\n")
    (results / "elastic.md").write_text("```\n" + table + "\n```\n"
                                        + plotting.write_beside("elastic", data, results / "elastic.md"))
    return 0 if all(v == args.runs for v in met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
