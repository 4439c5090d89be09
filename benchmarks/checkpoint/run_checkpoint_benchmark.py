"""Checkpoints side by side, in one run (issue 19; benchmarks/README.md, "Checkpoints").

Per model size (--params, default 25M, 100M and 400M parameters as square Linear layers,
with Adam's state: the file is about 3 x params x 4 bytes), --repeats rounds of:

  ddprun sync        Checkpointer::save: write, fsync, rename, manifest (training waits)
  ddprun async       Checkpointer::saveAsync: blocked = the snapshot into host buffers (what
                     training waits for), total = snapshot to manifest
  read cold          the newest checkpoint's bytes read with the file dropped from the page
                     cache: the floor under a load
  ddprun load        Checkpointer::load("auto"), cold: pick, read, CRC, broadcast, unpickle
      (these four come from benchmarks/checkpoint/checkpoint_bench, run once per model
       under `ddprun --standalone --nproc-per-node 1` with --repeats rounds)
  torch.save         Python: the same state (torch.load of ddprun's newest checkpoint),
                     torch.save to a file on the same disk + fsync of the file and the dir
  torch.load         Python: torch.load of ddprun's checkpoint, cold (fsync +
                     POSIX_FADV_DONTNEED first)
  dd                 dd if=/dev/zero bs=4M of the same byte count, conv=fsync: the limit

then, on a ~25M-parameter GPT trained by ddptrain under ddprun (the real product path),
the mean step time with no checkpoint, a synchronous and an asynchronous checkpoint
every --checkpoint-every steps (--step-repeats runs of each, interleaved; 25 steps, 1 x 16
tokens a step: about 2 s a step on 2 busy cores, so that the stall of a 0.3 GB checkpoint
shows against it).

Ratios from the medians: sync throughput / dd's (target >= 0.80), async blocked / sync
(<= 0.10), ddprun load / sync save (<= 1.5), ddprun sync / torch.save, ddprun load /
torch.load, ddprun load / read cold. Writes <out>/checkpoint.{json,md,png}; the checkpoint
directories are removed at the end (they are GBs).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import machine  # noqa: E402  benchmarks/machine.py: the machine in every result
import plotting  # noqa: E402  benchmarks/plotting.py: the PNG beside the table

DEFAULT_PARAMS = "25000000,100000000,400000000"
# (JSON key, label in the table, targets); every ratio is of medians.
RATIOS = [
    ("sync_vs_dd_throughput", "sync save throughput / dd's", (">=", 0.80)),
    ("async_blocked_vs_sync", "async blocked / sync save", ("<=", 0.10)),
    ("load_vs_sync", "ddprun load / sync save", ("<=", 1.5)),
    ("sync_vs_torch_save", "ddprun sync / torch.save (time)", None),
    ("load_vs_torch_load", "ddprun load / torch.load (time)", None),
    ("load_vs_read", "ddprun load / read cold", None),
]
ROWS = [  # (key in a model's "seconds", label)
    ("dd", "dd conv=fsync (limit)"),
    ("sync_save", "ddprun sync save"),
    ("async_blocked", "ddprun async: blocked"),
    ("async_total", "ddprun async: total"),
    ("torch_save", "torch.save + fsync"),
    ("read", "read cold"),
    ("load", "ddprun load cold"),
    ("torch_load", "torch.load cold"),
]


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def bench_line(stdout: str) -> dict | None:
    for line in stdout.splitlines():
        if "CHECKPOINT_BENCH " in line:  # may be prefixed by "[rank0]: "
            return json.loads(line.split("CHECKPOINT_BENCH ", 1)[1])
    return None


def drop_from_cache(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # clean pages, so that DONTNEED drops them
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def torch_save(state, path: pathlib.Path) -> float:
    import torch

    start = time.perf_counter()
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(path.parent)
    return time.perf_counter() - start


def torch_load_cold(path: pathlib.Path) -> float:
    import torch

    drop_from_cache(path)
    start = time.perf_counter()
    state = torch.load(path, map_location="cpu", weights_only=False)
    seconds = time.perf_counter() - start
    del state
    return seconds


def dd(path: pathlib.Path, nbytes: int) -> float:
    start = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4M", f"count={nbytes}", "iflag=count_bytes",
                    "conv=fsync"], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def checkpoint_rows(args, params: int, repeats: int, work: pathlib.Path, env: dict) -> dict:
    """One model size: checkpoint_bench's rows, then the Python and dd rows, --repeats each."""
    import gc

    import torch

    directory = work / f"ddprun-{params}"
    cmd = [args.ddprun, "--standalone", "--nproc-per-node", "1", "--metrics-port", "0", "--",
           args.checkpoint_bench, "--params", str(params), "--dir", str(directory), "--repeats", str(repeats)]
    start = time.monotonic()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    result = bench_line(out.stdout + "\n" + out.stderr)
    if out.returncode != 0 or result is None:
        sys.exit(f"checkpoint_bench gave no CHECKPOINT_BENCH line (exit {out.returncode}): {' '.join(cmd)}\n"
                 f"{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    print(f"  {params:>11,d} params: checkpoint_bench {time.monotonic() - start:.0f} s", flush=True)
    newest = pathlib.Path(result["checkpoint"])
    nbytes = int(result["bytes"])
    seconds = {"sync_save": result["sync_save_s"], "async_blocked": result["async_blocked_s"],
               "async_total": result["async_total_s"], "read": result["read_s"], "load": result["load_s"],
               "dd": [], "torch_save": [], "torch_load": []}
    python_file = work / "torch-save.pt"
    dd_file = work / "dd.bin"
    for _ in range(repeats):
        seconds["dd"].append(dd(dd_file, nbytes))
        state = torch.load(newest, map_location="cpu", weights_only=False)  # warm: not timed
        seconds["torch_save"].append(torch_save(state, python_file))
        del state
        gc.collect()
        python_file.unlink()
        seconds["torch_load"].append(torch_load_cold(newest))
        gc.collect()
    shutil.rmtree(directory, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    ratios = {
        "sync_vs_dd_throughput": med["dd"] / med["sync_save"],  # same bytes: time ratio inverted
        "async_blocked_vs_sync": med["async_blocked"] / med["sync_save"],
        "load_vs_sync": med["load"] / med["sync_save"],
        "sync_vs_torch_save": med["sync_save"] / med["torch_save"],
        "load_vs_torch_load": med["load"] / med["torch_load"],
        "load_vs_read": med["load"] / med["read"],
    }
    met = {}
    for key, _, target in RATIOS:
        if target:
            op, limit = target
            met[key] = ratios[key] >= limit if op == ">=" else ratios[key] <= limit
    return {"params": result["params"], "bytes": nbytes, "repeats": repeats, "seconds": seconds,
            "spread": {k: spread(v) for k, v in seconds.items()},
            "mb_per_s": {k: nbytes / 1e6 / med[k] for k in seconds if k != "async_blocked"},
            "ratios": ratios, "met": met}


def text_corpus(path: pathlib.Path, nbytes: int) -> None:
    """A plain-text file for ddptrain --data text: the repository's own prose, repeated."""
    prose = "".join(p.read_text(errors="replace") for p in sorted(HERE.parent.parent.glob("**/*.md"))
                    if "build" not in p.parts and ".git" not in p.parts)
    text = (prose * (nbytes // max(len(prose), 1) + 1))[:nbytes]
    path.write_text(text)


def step_run(args, mode: str, work: pathlib.Path, corpus: pathlib.Path, env: dict) -> dict:
    """One ddptrain run; the mean step time from its own metrics file: the records' times
    from step --warmup-steps to the last step, divided by the steps between. The record of
    step s is written before the checkpoint of step s, so the window holds the checkpoints
    of steps warmup, warmup + N, ... below the last step, and not the final one."""
    metrics = work / f"steps-{mode}.jsonl"
    checkpoints = work / f"steps-{mode}"
    metrics.unlink(missing_ok=True)
    shutil.rmtree(checkpoints, ignore_errors=True)
    train = [args.ddptrain, "--model", "gpt", "--gpt-layers", str(args.gpt_layers),
             "--gpt-embedding", str(args.gpt_embedding), "--gpt-heads", str(args.gpt_heads),
             "--data", "text", "--data-path", str(corpus), "--test-fraction", "0.02",
             "--block-size", str(args.block_size), "--batch-size", str(args.batch_size),
             "--eval-batch-size", "64",
             "--optimizer", "adam", "--lr", "0.0003", "--max-steps", str(args.steps), "--log-every", "1",
             "--metrics-file", str(metrics), "--progress=false", "--resume", "none"]
    if mode != "none":
        train += ["--checkpoint-dir", str(checkpoints), "--checkpoint-every", str(args.checkpoint_every),
                  "--checkpoint-async=" + ("true" if mode == "async" else "false"), "--keep-checkpoints", "2"]
    cmd = [args.ddprun, "--standalone", "--nproc-per-node", "1", "--metrics-port", "0", "--"] + train
    start = time.monotonic()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - start
    if out.returncode != 0:
        sys.exit(f"ddptrain ({mode}) exited {out.returncode}: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = {r["step"]: r for r in records if r.get("kind") == "train"}
    first, last = args.warmup_steps, max(steps)
    mean = (steps[last]["time"] - steps[first]["time"]) / (last - first)
    # The stall per checkpoint, robust to the machine's load drifting over the run: the
    # step after a checkpoint step (its interval holds the checkpoint) less the median of
    # the other steps. In the run without checkpoints the same steps give the noise.
    interval = {s: steps[s]["time"] - steps[s - 1]["time"] for s in range(first + 1, last + 1)}
    after = [s for s in interval if (s - 1) % args.checkpoint_every == 0]
    plain = statistics.median(v for s, v in interval.items() if s not in after)
    stall = statistics.median(interval[s] for s in after) - plain
    shutil.rmtree(checkpoints, ignore_errors=True)
    metrics.unlink(missing_ok=True)
    model_line = next((line for line in out.stderr.splitlines() + out.stdout.splitlines()
                       if "parameters=" in line), "")
    n_params = int(model_line.split("parameters=")[1].split()[0]) if model_line else None
    return {"mode": mode, "mean_step_s": mean, "steps_in_window": last - first, "window": [first, last],
            "median_plain_step_s": plain, "stall_per_checkpoint_s": stall,
            "step_ms": [steps[s]["step_ms"] for s in sorted(steps)], "wall_s": wall, "params": n_params}


def step_times(args, work: pathlib.Path, env: dict) -> dict:
    corpus = work / "corpus.txt"
    text_corpus(corpus, 200_000)
    runs = []
    for r in range(args.step_repeats):
        for mode in ("none", "sync", "async"):
            runs.append(step_run(args, mode, work, corpus, env))
            print(f"  steps {mode:5s} run {r + 1}: mean {runs[-1]['mean_step_s']:.3f} s/step, stall per "
                  f"checkpoint {runs[-1]['stall_per_checkpoint_s']:.3f} s "
                  f"(steps {runs[-1]['window'][0]}..{runs[-1]['window'][1]}, wall {runs[-1]['wall_s']:.0f} s)",
                  flush=True)
    by_mode = {m: [r["mean_step_s"] for r in runs if r["mode"] == m] for m in ("none", "sync", "async")}
    summary = {m: spread(v) for m, v in by_mode.items()}
    for m in summary:
        summary[m]["stall_per_checkpoint_s"] = spread([r["stall_per_checkpoint_s"] for r in runs if r["mode"] == m])
    none = summary["none"]["median"]
    for m in ("sync", "async"):
        summary[m]["overhead"] = summary[m]["median"] / none - 1
    return {"params": runs[0]["params"], "summary": summary, "runs": runs,
            "config": {"model": "gpt", "layers": args.gpt_layers, "embedding": args.gpt_embedding,
                       "heads": args.gpt_heads, "block_size": args.block_size, "batch_size": args.batch_size,
                       "steps": args.steps, "warmup_steps": args.warmup_steps,
                       "checkpoint_every": args.checkpoint_every, "world_size": 1, "repeats": args.step_repeats}}


def fmt_target(target) -> str:
    return f"{target[0]} {target[1]:g}" if target else "-"


def table(data: dict) -> list[str]:
    meta = data["meta"]
    lines = [f"# Checkpoint save and load, {meta['date']}: ddprun's Checkpointer (checkpoint_bench under",
             "# ddprun --standalone, 1 rank) against Python's torch.save/torch.load of the same state and dd",
             "# conv=fsync of the same bytes on the same disk. Square Linear layers with Adam state (file ~ 3 x",
             "# params x 4 bytes). Seconds over the repeats (min, median, max); MB/s of the median (10^6 bytes).",
             machine.line(meta["machine"]),
             "#",
             "#      params      bytes  row                        repeats      min   median      max     MB/s"]
    for m in data["models"].values():
        for key, label in ROWS:
            s = m["spread"][key]
            mbs = m["mb_per_s"].get(key)
            lines.append(f"  {m['params']:>11,d} {m['bytes'] / 1e9:8.2f} GB  {label:26s} {len(m['seconds'][key]):>3d}"
                         f"   {s['min']:8.3f} {s['median']:8.3f} {s['max']:8.3f} "
                         f"{('%8.0f' % mbs) if mbs else '       -'}")
    lines += ["#", "# Ratios of the medians; a target is met (yes) or missed (NO)",
              "#      params  ratio                             target     value  met"]
    for m in data["models"].values():
        for key, label, target in RATIOS:
            met = "-" if key not in m["met"] else ("yes" if m["met"][key] else "NO")
            lines.append(f"  {m['params']:>11,d}  {label:32s} {fmt_target(target):>8s}  {m['ratios'][key]:8.3f}  {met}")
    steps = data.get("steps")
    if steps:
        c = steps["config"]
        lines += ["#", f"# Step time: ddptrain --model gpt ({steps['params']:,d} parameters: {c['layers']} layers, "
                  f"embedding {c['embedding']}, {c['heads']} heads), text data,",
                  f"# block {c['block_size']} x batch {c['batch_size']}, Adam, 1 rank under ddprun --standalone; "
                  f"{c['steps']} steps, a checkpoint every {c['checkpoint_every']} steps.",
                  f"# mean step = (time of step {c['steps']}'s record - step {c['warmup_steps']}'s) / "
                  f"{c['steps'] - c['warmup_steps']} from --metrics-file: the checkpoints in between count,",
                  "# the first steps (warm-up) and the final checkpoint do not. Seconds over "
                  f"{c['repeats']} runs each (interleaved).",
                  "# stall = the step after a checkpoint step less the median of the other steps (median over",
                  "# the run's checkpoints; the run without checkpoints: the same steps, i.e. the noise).",
                  "#                mean step s                       stall per checkpoint s",
                  "# checkpoint      min   median      max   vs none      min   median      max"]
        for mode, label in (("none", "none"), ("sync", "synchronous"), ("async", "asynchronous")):
            s = steps["summary"][mode]
            t = s["stall_per_checkpoint_s"]
            over = f"{100 * s['overhead']:+7.1f} %" if "overhead" in s else "        -"
            lines.append(f"  {label:12s} {s['min']:7.3f} {s['median']:8.3f} {s['max']:8.3f}  {over}"
                         f" {t['min']:8.3f} {t['median']:8.3f} {t['max']:8.3f}")
    lines.append(f"# run took {meta['duration_s'] / 60:.1f} min")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ddprun", required=True)
    p.add_argument("--checkpoint-bench", required=True)
    p.add_argument("--ddptrain", required=True)
    p.add_argument("--out", required=True, help="results directory (checkpoint.{json,md,png})")
    p.add_argument("--dir", default=None,
                   help="where checkpoints are written (a fresh directory under it, removed at the end; "
                        "default: under $TMPDIR); the disk measured")
    p.add_argument("--params", default=DEFAULT_PARAMS, help="model sizes, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-for", default="",
                   help="fewer repeats for some sizes, e.g. 400000000:2 (comma-separated)")
    p.add_argument("--no-steps", action="store_true", help="leave out the step-time rows")
    p.add_argument("--step-repeats", type=int, default=2, help="ddptrain runs per mode")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--checkpoint-every", type=int, default=5)
    p.add_argument("--gpt-layers", type=int, default=8)
    p.add_argument("--gpt-embedding", type=int, default=512)
    p.add_argument("--gpt-heads", type=int, default=8)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=1)
    args = p.parse_args()
    repeats_for = {int(k): int(v) for k, v in (x.split(":") for x in args.repeats_for.split(",") if x)}
    started = time.monotonic()
    work = pathlib.Path(tempfile.mkdtemp(prefix="ddprun-checkpoint-bench-", dir=args.dir))
    env = dict(os.environ, DDPRUN_LOG_LEVEL=os.environ.get("DDPRUN_LOG_LEVEL", "info"))
    data = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "repeats": args.repeats,
                     "statistic": "median over repeats (min and max beside)",
                     "machine": machine.describe(str(work))},
            "targets": {key: {"op": t[0], "value": t[1]} for key, _, t in RATIOS if t}, "models": {}}
    try:
        for params in (int(x) for x in args.params.split(",")):
            m = checkpoint_rows(args, params, repeats_for.get(params, args.repeats), work, env)
            data["models"][str(params)] = m
            print(f"  {params:>11,d} params: " + "  ".join(f"{k}={v:.3f}" for k, v in m["ratios"].items()),
                  flush=True)
        if not args.no_steps:
            data["steps"] = step_times(args, work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data["meta"]["duration_s"] = time.monotonic() - started
    print(plotting.write_results("checkpoint", data, table(data), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
