#!/usr/bin/env python3
"""Draws the metrics a run wrote (ddptrain --metrics-file, JSON lines) as one PNG: loss
(train and test), accuracy, learning rate and throughput against the step, in 2x2 panels.

  scripts/plot_metrics.py RUN.jsonl -o OUT.png [--run RUN_ID|last|all]

Run it with the project's venv (scripts/setup.sh builds it from scripts/requirements.txt):
  ~/.cache/ddprun/venv-torch-2.15.0-py3.11/bin/python scripts/plot_metrics.py m.jsonl -o m.png

The file. The first record of every run is {"kind": "run", "run_id", "start_time",
"start_unix", "world_size", "config"}; every record carries "run_id" and "time" (unix
seconds). Training windows are {"kind": "train", "step", "epoch", "loss", "lr",
"samples_per_s", "step_ms"}, evaluations {"kind": "eval" | "final", "step", "test_loss",
"test_<metric>"..., "samples_per_s" (final only)}. Several runs may be appended to one file
(a resumed run is a new run id whose steps continue), and each is drawn in its own colour.
Files written before run records existed (no "run_id") are read as one run, split where
the step goes back (a fresh run appended to the same file). Other kinds are skipped.

--run picks what is drawn: all (the default) every run in the file, last the last one, or
one run id (a unique prefix is enough).

Why matplotlib: the venv already carries numpy, which is all it needs besides its own
small wheels; the JSON lines are parsed here in Python, where the checks and the error
messages live, instead of being turned into column files for gnuplot; the Agg backend
writes a PNG without a display.

Exit codes: 0 the PNG is written; 2 bad input or usage (the message says what was expected,
what was found and what to do).
"""
from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys

LEGACY_RUN = "(no run id)"  # the run of records written before run records existed


def legacy_run_id(number: int) -> str:
    """The name of the number-th run (from 1) of a file without run ids."""
    return LEGACY_RUN if number == 1 else f"(no run id {number})"


class InputError(Exception):
    """Input this script cannot draw; the message says expected, found and what to do."""


class Run:
    """One run of the file: its run record (if any) and its records by kind."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.header: dict = {}  # the {"kind": "run"} record
        self.train: list[dict] = []
        self.evals: list[dict] = []  # "eval" and "final"
        self.kinds = collections.Counter()  # every record's kind (for the error messages)

    @property
    def world_size(self):
        return self.header.get("world_size")

    def short_id(self) -> str:
        """A long run id (a UUID) cut to its first 8 characters, as git shows a commit."""
        return self.run_id[:8] if len(self.run_id) > 12 and not self.run_id.startswith("(") else self.run_id

    def label(self) -> str:
        start = self.header.get("start_time")
        return f"{self.short_id()} ({start[:19].replace('T', ' ')})" if isinstance(start, str) else self.short_id()


def read_runs(path: pathlib.Path) -> list[Run]:
    """The runs of a metrics file, in file order."""
    try:
        text = path.read_text()
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}; expected the JSON lines "
                         "file that ddptrain --metrics-file wrote. HINT: check the path") from None
    runs: dict[str, Run] = {}
    legacy_runs = 0  # runs without run ids so far; a new one starts where the step goes back
    legacy_step = None  # the last train step of the current one
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(
                f"{path}:{number}: not JSON ({error.msg} at column {error.colno}): found "
                f"{line[:80]!r}; expected one JSON object per line, as ddptrain --metrics-file "
                "writes. HINT: a line cut short when a run was killed can be deleted") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}:{number}: found a JSON {type(record).__name__}, expected an "
                             "object such as {\"kind\": \"train\", ...}. HINT: is this a metrics file?")
        run_id = record.get("run_id")
        kind = record.get("kind")
        if run_id is None:  # the format before run records
            step = record.get("step") if kind == "train" else None
            if isinstance(step, (int, float)):
                if legacy_step is not None and step < legacy_step:
                    legacy_runs += 1
                legacy_step = step
            legacy_runs = max(legacy_runs, 1)
            run_id = legacy_run_id(legacy_runs)
        run = runs.setdefault(str(run_id), Run(str(run_id)))
        run.kinds[str(kind)] += 1
        if kind == "run":
            run.header = record
        elif kind == "train":
            run.train.append(record)
        elif kind in ("eval", "final"):
            run.evals.append(record)
    return list(runs.values())


def select(runs: list[Run], which: str, path: pathlib.Path) -> list[Run]:
    if not runs:
        raise InputError(f"{path} holds no records; expected the JSON lines of ddptrain "
                         "--metrics-file. HINT: did the run get past its first --log-every steps?")
    if which == "all":
        chosen = runs
    elif which == "last":
        chosen = runs[-1:]
    else:
        chosen = [r for r in runs if r.run_id == which] or [r for r in runs if r.run_id.startswith(which)]
        if len(chosen) != 1:
            found = ", ".join(r.run_id for r in runs)
            what = "no run" if not chosen else f"{len(chosen)} runs"
            raise InputError(f"--run {which}: {what} of {path} matches; its runs are: {found}. "
                             "HINT: pass one of them (a unique prefix is enough), last or all")
    if not any(r.train for r in chosen):
        kinds = sum((r.kinds for r in chosen), collections.Counter())
        found = ", ".join(f"{count} {kind!r}" for kind, count in kinds.items())
        raise InputError(f"{path}: no train records in {'the file' if which == 'all' else 'run ' + chosen[0].run_id} "
                         f"(found records of kind: {found}); expected lines with "
                         "\"kind\": \"train\", which ddptrain writes every --log-every steps. "
                         "HINT: a run shorter than --log-every steps writes none; lower --log-every")
    return chosen


def series(records: list[dict], key: str) -> tuple[list, list]:
    points = [(r["step"], r[key]) for r in records
              if isinstance(r.get("step"), (int, float)) and isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def title(runs: list[Run]) -> str:
    sizes = sorted({r.world_size for r in runs if r.world_size is not None})
    models = sorted({str(r.header["config"]["model"]) for r in runs
                     if isinstance(r.header.get("config"), dict) and "model" in r.header["config"]})
    ids = ", ".join(r.short_id() for r in runs)
    if all(not r.header and r.run_id.startswith("(no run id") for r in runs):
        ids += " (a file from before run records)"
    parts = [f"run {ids}" if len(runs) == 1 else f"{len(runs)} runs: {ids}"]
    if models:
        parts.append("model " + ", ".join(models))
    parts.append("world size " + (", ".join(map(str, sizes)) if sizes else "unknown"))
    return "ddptrain metrics: " + "; ".join(parts)


def plot(runs: list[Run], out: pathlib.Path) -> None:
    try:
        import matplotlib
    except ImportError:
        raise InputError(f"matplotlib is not installed for {sys.executable}; expected the project's "
                         "venv. HINT: bash scripts/setup.sh --deps-only, then run this script with "
                         "~/.cache/ddprun/venv-torch-<pin>-py<ver>/bin/python") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=100)
    (loss_ax, acc_ax), (lr_ax, speed_ax) = axes
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # Each run has a colour (the figure's legend) and each series a line style (the panel's
    # legend, drawn in grey when there are several runs).
    styles: dict = {}  # (axes, series) -> line kwargs, in drawing order
    for i, run in enumerate(runs):
        color = colors[i % len(colors)]

        def draw(ax, records, key, name, **style):
            steps, values = series(records, key)
            if steps:
                ax.plot(steps, values, color=color, **style)
                styles.setdefault((ax, name), style)

        draw(loss_ax, run.train, "loss", "train loss")
        draw(loss_ax, run.evals, "test_loss", "test loss", linestyle="--", marker="o", markersize=4)
        metrics = sorted({k for r in run.evals for k in r if k.startswith("test_") and k != "test_loss"})
        for metric, marker in zip(metrics, "osD^v"):
            draw(acc_ax, run.evals, metric, metric.removeprefix("test_"), marker=marker, markersize=4)
        draw(lr_ax, run.train, "lr", "lr")
        draw(speed_ax, run.train, "samples_per_s", "train windows")
        draw(speed_ax, [r for r in run.evals if r.get("kind") == "final"], "samples_per_s",
             "whole run (final)", linestyle="none", marker="*", markersize=10)
    several = len(runs) > 1
    for ax, name, ylabel in ((loss_ax, "loss", "loss"), (acc_ax, "test metrics", "accuracy"),
                             (lr_ax, "learning rate", "lr"), (speed_ax, "throughput", "samples/s")):
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        handles = [(Line2D([], [], color="0.35" if several else colors[0], **style), label)
                   for (owner, label), style in styles.items() if owner is ax]
        if handles:
            ax.legend(*zip(*handles), fontsize="small")
        else:
            ax.text(0.5, 0.5, "no evaluations in the file\n(ddptrain --eval-every N)" if ax is acc_ax
                    else "no data", transform=ax.transAxes, ha="center", va="center", color="gray")
    if several:
        fig.legend([Line2D([], [], color=colors[i % len(colors)], linewidth=3) for i in range(len(runs))],
                   [r.label() for r in runs], loc="lower center", ncol=min(len(runs), 4),
                   title="runs (run id, start time UTC)", fontsize="small")
    fig.suptitle(title(runs))
    fig.tight_layout(rect=(0, 0.08 if several else 0, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", type=pathlib.Path, help="the JSON lines file (ddptrain --metrics-file)")
    parser.add_argument("-o", "--output", type=pathlib.Path, required=True, help="the PNG to write")
    parser.add_argument("--run", default="all", help="all (default), last, or a run id or its unique prefix")
    args = parser.parse_args(argv)
    try:
        runs = select(read_runs(args.metrics), args.run, args.metrics)
        plot(runs, args.output)
    except InputError as error:
        print(f"plot_metrics: {error}", file=sys.stderr)
        return 2
    print(f"plot_metrics: wrote {args.output} ({', '.join(r.run_id for r in runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
