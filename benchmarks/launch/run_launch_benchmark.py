"""Launch time side by side, in one run: `ddprun --standalone` starting launch_worker (C++),
`ddprun --standalone` starting the Python script launch_worker.py as a torchrun user would
(`ddprun ... launch_worker.py`), and `torchrun --standalone` starting the same script: the
same minimal DDP program (init, mlp, DDP wrap, K steps, barrier), for 1, 2 and 4 workers on
this node. All get OMP_NUM_THREADS=1 and Gloo over loopback.

Every run is timed from the driver's clock just before the command starts
(time.time_ns(), CLOCK_REALTIME, the clock the workers print) to:
  start       the last worker's first line of its own code (C++: LibTorch loaded; Python:
              the interpreter is up, torch not yet imported)
  torch       the last worker has torch loaded (C++: = start)
  init        the last worker's process group is up (rendezvous done)
  ddp         the last worker's model is built and wrapped in DDP
  first_step  the last worker finished its first training step: every worker has stepped
  exit        the launcher exited (all workers gone)
One untimed warm-up run of each launcher and worker count comes first (warm disk cache),
then `--repeats` rounds, each over all worker counts with the two launchers back to back
(alternating which goes first); the median counts. ratio = ddprun's / torchrun's time;
the target is ratio <= 0.5. A launch that fails (non-zero exit, or a rank without its line)
is reported, listed in the results and retried up to --attempts times; its time is not
in the medians.

Writes <out>/launch.json (every run and the summary), <out>/launch.md (the table) and
<out>/launch.png (first-step times and the ratios as bars, benchmarks/plotting.py).
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import machine  # noqa: E402  benchmarks/machine.py: the machine in every result
import plotting  # noqa: E402  benchmarks/plotting.py: the PNG beside the table

PHASES = ("start", "torch", "init", "ddp", "first_step")
IMPLS = ("ddprun", "ddprun_py", "torchrun")
# The impl= a launcher's workers print: ddprun_py runs the Python twin.
WORKER_IMPL = {"ddprun": "ddprun", "ddprun_py": "torch", "torchrun": "torch"}
# Compared with torchrun: the C++ program, and the same Python script as torchrun's.
RATIOS = ("ddprun", "ddprun_py")
# Any prefix before the marker (e.g. "[rank 1]: " from a launcher) is allowed, and so are
# two workers' lines run together on one line of a shared pipe: a record ends at the end
# of the line or at the next marker.
RECORD = re.compile(r"LAUNCH_BENCH\s+(.*?)(?=LAUNCH_BENCH|$)", re.MULTILINE)
FIELD = re.compile(r"(\w+)=(\w+)")
# Variables of an outer launch that would make a worker resolve a different world.
OUTER_ENV_PREFIXES = ("PET_", "OMPI_", "PMI_", "PMIX_", "TORCHELASTIC_")
OUTER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
             "MASTER_PORT", "GROUP_RANK", "NODE_RANK")


def command(impl, workers, args):
    if impl == "ddprun":
        return [args.ddprun, "--standalone", "--nproc-per-node", str(workers), "--",
                args.launch_worker, "--steps", str(args.steps)]
    if impl == "ddprun_py":
        # The script as a torchrun user passes it; ddprun runs it with this interpreter.
        return [args.ddprun, "--standalone", "--nproc-per-node", str(workers),
                "--python", args.python, args.python_worker, "--steps", str(args.steps)]
    return [args.torchrun, "--standalone", "--nproc-per-node", str(workers),
            args.python_worker, "--steps", str(args.steps)]


class LaunchFailed(Exception):
    """A launch exited non-zero or not every rank printed its line."""

    def __init__(self, record, detail):
        super().__init__(detail)
        self.record = record


def run_once(impl, workers, args, env):
    """One launch; returns {phase: seconds after the command started}. Raises LaunchFailed
    for a failed launch; exits loudly for a malformed line (a bug here)."""
    cmd = command(impl, workers, args)
    start_ns = time.time_ns()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    end_ns = time.time_ns()
    detail = f"{' '.join(cmd)}\n--- stdout\n{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-3000:]}"
    ranks = {}
    for match in RECORD.finditer(out.stdout):
        fields = dict(FIELD.findall(match.group(1)))
        try:
            rank = int(fields["rank"])
            valid = rank not in ranks and int(fields["world_size"]) == workers and \
                fields["impl"] == WORKER_IMPL[impl]
            stamps = {p: int(fields[f"{p}_ns"]) for p in PHASES + ("end",)}
        except (KeyError, ValueError):
            valid = False
        if not valid:
            sys.exit(f"launch benchmark: unexpected record {match.group(0)!r} (expected one per "
                     f"rank, impl={WORKER_IMPL[impl]}, world_size={workers}) from: {detail}")
        ranks[rank] = stamps
    if out.returncode != 0 or sorted(ranks) != list(range(workers)):
        raise LaunchFailed({"impl": impl, "workers": workers, "exit_code": out.returncode,
                            "ranks_reported": sorted(ranks), "stderr_tail": out.stderr[-1500:]},
                           f"launch benchmark: exit code {out.returncode}, LAUNCH_BENCH lines from "
                           f"ranks {sorted(ranks)} (expected 0..{workers - 1}) from: {detail}")
    # "Every worker has reached phase p" = the last worker's time for p.
    result = {p: (max(r[p] for r in ranks.values()) - start_ns) / 1e9 for p in PHASES}
    result["exit"] = (end_ns - start_ns) / 1e9
    result["per_rank"] = {str(k): {p: (v[p] - start_ns) / 1e9 for p in PHASES + ("end",)}
                          for k, v in sorted(ranks.items())}
    return result


def launch(impl, workers, args, env, failures):
    """run_once, retried up to --attempts times. Every failure is recorded in `failures` (and
    reported); the last one ends the benchmark loudly."""
    for attempt in range(1, args.attempts + 1):
        try:
            return run_once(impl, workers, args, env)
        except LaunchFailed as failure:
            failures.append(failure.record)
            print(f"FAILED attempt {attempt}/{args.attempts}: {failure}", file=sys.stderr, flush=True)
            if attempt == args.attempts:
                sys.exit(f"launch benchmark: {impl} with {workers} workers failed {attempt} times")


def busy_cpu_seconds():
    """CPU time this machine spent outside idle and iowait since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown ({error})"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ddprun", required=True)
    p.add_argument("--launch-worker", required=True)
    p.add_argument("--torchrun", required=True)
    p.add_argument("--python-worker",
                   default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "launch_worker.py"))
    p.add_argument("--python", default=None,
                   help="the interpreter ddprun runs launch_worker.py with (default: torchrun's)")
    p.add_argument("--out", required=True)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--timeout", type=float, default=300, help="seconds per launch")
    p.add_argument("--attempts", type=int, default=3,
                   help="tries per launch; failures are counted and reported, not hidden")
    args = p.parse_args()
    worker_counts = [int(n) for n in args.workers.split(",")]
    args.python = args.python or os.path.join(os.path.dirname(args.torchrun), "python")
    env = {k: v for k, v in os.environ.items()
           if k not in OUTER_ENV and not k.startswith(OUTER_ENV_PREFIXES)}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")

    failures = []
    load_before = os.getloadavg()
    busy_before, children_before, wall_before = busy_cpu_seconds(), children_cpu_seconds(), time.time()
    for workers in worker_counts:  # warm-up: disk cache, page cache of libtorch and torch's .py
        for impl in IMPLS:
            launch(impl, workers, args, env, failures)
    runs = []
    times = {(n, impl): [] for n in worker_counts for impl in IMPLS}
    for repeat in range(args.repeats):
        for workers in worker_counts:
            # Rotate which launcher goes first, so none always runs on the coldest cache.
            for impl in IMPLS[repeat % len(IMPLS):] + IMPLS[:repeat % len(IMPLS)]:
                result = launch(impl, workers, args, env, failures)
                runs.append({"impl": impl, "workers": workers, "repeat": repeat, **result})
                times[(workers, impl)].append(result)
                print(f"repeat {repeat} workers {workers} {impl:8s} first_step {result['first_step']:7.3f} s"
                      f"  exit {result['exit']:7.3f} s", flush=True)
    load_after = os.getloadavg()
    # The machine's CPU time not spent by this benchmark's processes: other users' load,
    # which stretches the launches (the benchmark wants it near 0).
    other_cpu_s = (busy_cpu_seconds() - busy_before) - (children_cpu_seconds() - children_before)
    wall_s = time.time() - wall_before

    summary = {}
    for workers in worker_counts:
        entry = {}
        for impl in IMPLS:
            rs = times[(workers, impl)]
            entry[impl] = {phase: statistics.median(r[phase] for r in rs) for phase in PHASES + ("exit",)}
            entry[impl]["first_step_min"] = min(r["first_step"] for r in rs)
            entry[impl]["first_step_max"] = max(r["first_step"] for r in rs)
        for impl in RATIOS:
            entry[f"{impl}_ratio_first_step"] = entry[impl]["first_step"] / entry["torchrun"]["first_step"]
            entry[f"{impl}_ratio_exit"] = entry[impl]["exit"] / entry["torchrun"]["exit"]
        # The target is the C++ program's; the Python script's row shows what the launcher
        # alone saves (its workers import torch like torchrun's).
        entry["target_met"] = entry["ddprun_ratio_first_step"] <= 0.5 and entry["ddprun_ratio_exit"] <= 0.5
        summary[str(workers)] = entry

    meta = {"workers": worker_counts, "repeats": args.repeats, "steps": args.steps,
            "backend": "gloo", "OMP_NUM_THREADS": 1, "statistic": "median over repeats",
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu_count": os.cpu_count(),
            "machine": machine.describe(args.out),
            "loadavg_before": load_before, "loadavg_after": load_after,
            "run_wall_s": wall_s, "other_processes_cpu_s": other_cpu_s,
            "ddprun_version": version([args.ddprun, "--version"]),
            "torch_version": version([os.path.join(os.path.dirname(args.torchrun), "python"), "-c",
                                      "import torch; print(torch.__version__)"])}
    os.makedirs(args.out, exist_ok=True)
    data = {"meta": meta, "summary": summary, "runs": runs, "failures": failures}
    with open(os.path.join(args.out, "launch.json"), "w") as f:
        json.dump(data, f, indent=2)

    lines = ["# Launch time: seconds from the command's start until the LAST worker reached each point,",
             f"# median of {args.repeats} runs after one warm-up each; {os.cpu_count()} cores, OMP_NUM_THREADS=1, Gloo.",
             "# start = worker's own code runs, torch = torch loaded, init = process group up,",
             f"# ddp = model wrapped, first_step = every worker stepped, exit = launcher exited ({args.steps} steps).",
             machine.line(meta["machine"]),
             "#",
             "# workers  launcher   start_s  torch_s   init_s    ddp_s  first_step_s  (min..max)      exit_s"]
    for workers in worker_counts:
        for impl in IMPLS:
            m = summary[str(workers)][impl]
            lines.append(f"  {workers:7d}  {impl:8s} {m['start']:8.3f} {m['torch']:8.3f} {m['init']:8.3f}"
                         f" {m['ddp']:8.3f}  {m['first_step']:12.3f}  ({m['first_step_min']:.3f}..{m['first_step_max']:.3f})"
                         f" {m['exit']:10.3f}")
    lines += ["#", "# ratio = time / torchrun's; ddprun = the C++ worker (target <= 0.50), ddprun_py = the same",
              "# Python script as torchrun's, run by ddprun",
              "# workers  ddprun first_step  exit  target_met   ddprun_py first_step  exit"]
    for workers in worker_counts:
        s = summary[str(workers)]
        lines.append(f"  {workers:7d}  {s['ddprun_ratio_first_step']:17.2f} {s['ddprun_ratio_exit']:5.2f}"
                     f"  {'yes' if s['target_met'] else 'no':10s}   {s['ddprun_py_ratio_first_step']:20.2f}"
                     f" {s['ddprun_py_ratio_exit']:5.2f}")
    lines += ["#", f"# whole run (warm-up included): {wall_s:.0f} s wall; CPU used by other processes meanwhile: {other_cpu_s:.1f} s"
                   f" ({100 * other_cpu_s / (wall_s * os.cpu_count()):.1f}% of the machine)",
              f"# failed launches (retried; not in the medians): {len(failures)}"]
    for f in failures:
        lines.append(f"#   {f['impl']} workers={f['workers']} exit_code={f['exit_code']} "
                     f"ranks_reported={f['ranks_reported']}")
    table = "\n".join(lines) + "\n"
    table += plotting.write_beside("launch", data, os.path.join(args.out, "launch.md"))
    with open(os.path.join(args.out, "launch.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
