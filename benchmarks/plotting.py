"""The benchmarks' pictures: each results table (benchmarks/results/<name>.md) gets a bar
chart beside it (<name>.png), drawn from the same data its driver writes to <name>.json.

One chart per benchmark, in CHARTS (name -> function from the JSON to the panels), so that
a driver after its run and benchmarks/replot.py from committed JSON draw the same thing.
Each panel is a grouped bar chart: groups on the x axis (models, worker counts,
scenarios), one bar per series, the value written on each bar, and optional limits (a
target ratio, a time bound) drawn as dashed lines over their group.

matplotlib (scripts/requirements.txt) with the Agg backend; a driver run by an interpreter
without it still writes its table and JSON, says so, and benchmarks/replot.py draws the
picture later.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import sys


@dataclasses.dataclass
class Panel:
    title: str
    ylabel: str
    groups: list[str]  # the x axis
    series: dict[str, list]  # legend label -> one value per group (None: no bar)
    limits: list | None = None  # per group: a dashed line at this value (None: none)
    limit_label: str = "target"
    baseline: float | None = None  # a solid line across the panel (1.0 for ratios)
    fmt: str = "{:.2f}"


def draw(png: pathlib.Path, title: str, panels: list[Panel], width: float = 12.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 4.2 * len(panels)), dpi=100, squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        n = len(panel.series)
        bar = 0.8 / max(n, 1)
        for i, (label, values) in enumerate(panel.series.items()):
            xs = [g + (i - (n - 1) / 2) * bar for g in range(len(panel.groups))]
            shown = [(x, v) for x, v in zip(xs, values) if v is not None]
            if not shown:
                continue
            bars = ax.bar([x for x, _ in shown], [v for _, v in shown], bar * 0.95, label=label)
            ax.bar_label(bars, [panel.fmt.format(v) for _, v in shown], fontsize="x-small", padding=2)
        if panel.limits:
            labelled = False
            for g, limit in enumerate(panel.limits):
                if limit is not None:
                    ax.hlines(limit, g - 0.45, g + 0.45, colors="crimson", linestyles="--",
                              label=None if labelled else panel.limit_label)
                    labelled = True
        if panel.baseline is not None:
            ax.axhline(panel.baseline, color="0.3", linewidth=0.8)
        ax.set_xticks(range(len(panel.groups)), panel.groups,
                      rotation=30 if max(map(len, panel.groups)) > 12 else 0,
                      ha="right" if max(map(len, panel.groups)) > 12 else "center")
        ax.set_title(panel.title)
        ax.set_ylabel(panel.ylabel)
        ax.grid(True, axis="y", alpha=0.3)
        low, high = ax.get_ylim()  # room above the bars and limits for the legend
        ax.set_ylim(low, high + 0.25 * (high - low))
        ax.legend(fontsize="small", ncol=min(n + 1, 5), loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


# --- one chart per benchmark: its JSON (as the driver writes it) -> title and panels --------

def ddp_chart(data: dict) -> tuple[str, list[Panel]]:
    summary = data["summary"]
    models = list(summary)
    speedups = {"vs torch DDP": "speedup_vs_torch_ddp", "vs naive": "speedup_vs_naive",
                "ring vs torch": "speedup_ring_vs_torch_ddp",
                "system malloc vs torch": "speedup_system_vs_torch_ddp",
                "vs torch keep": "speedup_vs_torch_ddp_keep"}
    hidden = {"ddprun": "ddprun", "ddprun view": "ddprun_view", "torch": "torch"}
    meta = data.get("meta", {})
    return (f"DDP step time: {meta.get('world_size', 2)} ranks, {meta.get('backend', 'gloo')}, "
            f"median of {meta.get('repeats', '?')} runs (benchmarks/results/ddp.md)",
            [Panel("speedup = the other's step time / ddprun's (> 1: ddprun faster)", "speedup (x)",
                   models, {label: [summary[m][key] for m in models] for label, key in speedups.items()},
                   baseline=1.0, fmt="{:.2f}x"),
             Panel("hidden = (compute + allreduce - step) / allreduce (1: communication fully overlapped)",
                   "hidden fraction", models,
                   {label: [summary[m]["hidden_fraction"][key] for m in models] for label, key in hidden.items()},
                   baseline=0.0)])


def launch_chart(data: dict) -> tuple[str, list[Panel]]:
    summary = data["summary"]
    counts = list(summary)
    groups = [f"{n} worker{'s' if n != '1' else ''}" for n in counts]
    impls = ("ddprun", "ddprun_py", "torchrun")
    ratios = {"ddprun first step": "ddprun_ratio_first_step", "ddprun exit": "ddprun_ratio_exit",
              "ddprun_py first step": "ddprun_py_ratio_first_step", "ddprun_py exit": "ddprun_py_ratio_exit"}
    return (f"Launch: command start to every worker's first step, median of "
            f"{data.get('meta', {}).get('repeats', '?')} runs (benchmarks/results/launch.md)",
            [Panel("seconds until the last worker finished its first step", "first step (s)", groups,
                   {impl: [summary[n][impl]["first_step"] for n in counts] for impl in impls}, fmt="{:.2f}"),
             Panel("time / torchrun's (ddprun target <= 0.5)", "ratio to torchrun", groups,
                   {label: [summary[n][key] for n in counts] for label, key in ratios.items()},
                   limits=[0.5] * len(counts), limit_label="ddprun target 0.5", baseline=1.0)])


def elastic_chart(data: dict) -> tuple[str, list[Panel]]:
    runs, targets = data["runs"], data.get("targets", {})
    columns = ["death_to_round", "death_to_first_step", "join_to_round", "join_to_first_step"]
    values = {"median": [statistics.median(r[c] for r in runs) for c in columns],
              "max": [max(r[c] for r in runs) for c in columns]}
    met = data.get("met", {})
    met_text = ", ".join(f"{k} met in {v} of {len(runs)}" for k, v in met.items())
    return (f"Elastic timeline over {len(runs)} runs (benchmarks/results/elastic.md)",
            [Panel(f"seconds; {met_text}" if met_text else "seconds", "seconds",
                   [c.replace("_to_", " to ").replace("_", " ") for c in columns], values,
                   limits=[targets.get(c) for c in columns], limit_label="target")])


def faults_chart(data: dict) -> tuple[str, list[Panel]]:
    rows = data["rows"]
    passed = sum(bool(r["pass"]) for r in rows)
    groups = [r["scenario"] + ("" if r["pass"] or r["skipped"] else " (FAIL)") for r in rows]
    return (f"Fault matrix: {passed} of {len(rows)} rows pass (benchmarks/results/faults.md)",
            [Panel("seconds from the fault; dashed: the bound every rank must be gone within",
                   "seconds", groups,
                   {"detect": [r["detect_s"] for r in rows], "all exited": [r["all_exit_s"] for r in rows]},
                   limits=[r["bound_s"] for r in rows], limit_label="bound", fmt="{:.2f}")])


def metrics_cost_chart(data: dict) -> tuple[str, list[Panel]]:
    spread = data["summary"]["step_ms"]
    configs = [c for c in ("off", "on", "stress") if c in spread]
    meta = data.get("meta", {})
    return (f"The metrics' cost to a step: mlp_small, median of {meta.get('repeats', '?')} runs "
            f"(cost {100 * data['summary']['cost_fraction']:+.2f} %, target <= 2 %)",
            [Panel("step time: metrics off, on (scraped every 1 s), stress (every 100 ms)", "step (ms)",
                   configs,
                   {stat: [spread[c][stat] for c in configs] for stat in ("min", "median", "max")},
                   limits=[None] + [spread["off"]["median"] * 1.02] * (len(configs) - 1),
                   limit_label="off + 2 %",
                   fmt="{:.3f}")])


def checkpoint_chart(data: dict) -> tuple[str, list[Panel]]:
    models = list(data["models"].values())
    groups = [f"{m['params'] / 1e6:.0f}M params, {m['bytes'] / 1e9:.2f} GB" for m in models]
    rows = {"dd (limit)": "dd", "ddprun sync": "sync_save", "ddprun async total": "async_total",
            "torch.save": "torch_save", "read cold": "read", "ddprun load": "load", "torch.load": "torch_load"}
    ratios = [("sync_vs_dd_throughput", "sync MB/s / dd's"), ("async_blocked_vs_sync", "async blocked / sync"),
              ("load_vs_sync", "load / sync save"), ("sync_vs_torch_save", "sync / torch.save"),
              ("load_vs_torch_load", "load / torch.load"), ("load_vs_read", "load / read cold")]
    targets = data.get("targets", {})
    meta = data.get("meta", {})
    panels = [Panel("MB/s of the median time (10^6 bytes / s); saves include fsync, loads are cold", "MB/s",
                    groups, {label: [m["mb_per_s"][key] for m in models] for label, key in rows.items()},
                    fmt="{:.0f}"),
              Panel("ratios of the medians (time ratios except the first); dashed: the targets", "ratio",
                    [label for _, label in ratios],
                    {f"{int(size) / 1e6:g}M": [m["ratios"][key] for key, _ in ratios]
                     for size, m in data["models"].items()},
                    limits=[targets[key]["value"] if key in targets else None for key, _ in ratios],
                    baseline=1.0)]
    steps = data.get("steps")
    if steps:
        modes = [("none", "no checkpoint"), ("sync", "synchronous"), ("async", "asynchronous")]
        c = steps["config"]
        panels.append(Panel(f"ddptrain gpt, {steps['params'] / 1e6:.0f}M params: mean step time, a checkpoint "
                            f"every {c['checkpoint_every']} steps ({c['repeats']} runs each)", "seconds per step",
                            [label for _, label in modes],
                            {stat: [steps["summary"][m][stat] for m, _ in modes] for stat in ("min", "median", "max")},
                            fmt="{:.3f}"))
        if all("stall_per_checkpoint_s" in steps["summary"][m] for m, _ in modes):
            panels.append(Panel("stall per checkpoint: the step after a checkpoint step less the median step "
                                "(no checkpoint: the same steps, the noise)", "seconds", [label for _, label in modes],
                                {stat: [steps["summary"][m]["stall_per_checkpoint_s"][stat] for m, _ in modes]
                                 for stat in ("min", "median", "max")}, baseline=0.0, fmt="{:.2f}"))
    return (f"Checkpoints: ddprun against torch.save/torch.load and dd, median of {meta.get('repeats', '?')} "
            f"(benchmarks/results/checkpoint.md)", panels)


CHARTS = {"ddp": ddp_chart, "metrics_cost": metrics_cost_chart, "launch": launch_chart, "elastic": elastic_chart, "faults": faults_chart,
          "checkpoint": checkpoint_chart}


def write_png(name: str, data: dict, png: pathlib.Path) -> None:
    """Draws benchmark `name`'s chart of `data` (its JSON) to `png`."""
    title, panels = CHARTS[name](data)
    draw(pathlib.Path(png), title, panels, width=14.0 if name == "faults" else 12.0)


def write_beside(name: str, data: dict, md: pathlib.Path) -> str:
    """Draws the chart beside the table `md` (<md>.png) and returns the markdown line that
    shows it, to end the table with; without matplotlib, says so and returns ""."""
    png = pathlib.Path(md).with_suffix(".png")
    try:
        write_png(name, data, png)
    except ImportError as error:
        print(f"note: no {png.name} ({error}); the table and JSON are written. HINT: run "
              "benchmarks/replot.py with the project's venv (scripts/requirements.txt)",
              file=sys.stderr, flush=True)
        return ""
    return image_link(name, png)


def write_results(name: str, data: dict, table_lines: list[str], out: str) -> str:
    """Writes <out>/<name>.json (data), <name>.md (the table, then its picture) and
    <name>.png; returns the markdown."""
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=2))
    table = "\n".join(table_lines) + "\n"
    table += write_beside(name, data, out_dir / f"{name}.md")
    (out_dir / f"{name}.md").write_text(table)
    return table


def image_link(name: str, png: pathlib.Path) -> str:
    return f"\n![{name} chart]({pathlib.Path(png).name})\n"
