"""DDP throughput side by side, in one run: ddprun's DistributedDataParallel against
PyTorch's Python DDP under torchrun, a naive per-parameter allreduce after backward, the
compute-only step and one raw allreduce of all gradients. 2 ranks, Gloo, 1 thread per
rank, data in memory. Each configuration runs `--repeats` times, alternating
implementations; the median step time counts.

Writes <out>/ddp.json (every run and the summary), <out>/ddp.md (the table) and
<out>/ddp.png (the speedups and hidden fractions as bars, benchmarks/plotting.py).
hidden = (compute + allreduce - step) / allreduce: the share of the gradient
communication that overlaps backward (1 = all hidden, 0 = none, < 0 = overhead on top).
More rows separate ddprun's own choices from DDP itself: every bucket by ring allreduce
(ddp_ring), ddprun with glibc's own malloc thresholds (ddp_system), and PyTorch DDP given
ddprun's thresholds (torch ddp_keep).
--backend, --device, --nproc-per-node and --configs run other set-ups (scripts/device_check.sh:
both DDPs on CUDA tensors of one GPU); --name names the files (<out>/<name>.json ...).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import machine  # noqa: E402  benchmarks/machine.py: the machine in every result
import plotting  # noqa: E402  benchmarks/plotting.py: the PNG beside the table

MODELS = {  # name: (timed steps, warm-up steps)
    "mlp_small": (400, 40),
    "lenet": (120, 12),
    "big": (20, 10),
}


# What ddprun's runtime sets with mallopt (runtime/memory/host_allocator.h), as the
# environment variables glibc reads at start-up: PyTorch given the same allocator.
KEEP_FREED_BLOCKS_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


CONFIGS = [("ddprun", mode) for mode in ("ddp", "ddp_view", "ddp_ring", "ddp_system", "naive",
                                         "compute", "allreduce")] + \
          [("torch", mode) for mode in ("ddp", "ddp_keep", "compute", "allreduce")]


def result_line(stdout):
    for line in stdout.splitlines():
        if line.startswith("{") or "{\"impl\"" in line:
            return json.loads(line[line.index("{"):])
    return None


def run(cmd, env, attempts=3):
    """One configuration. Rank 0 prints its result after the timed steps; a crash after
    that (PyTorch's Gloo teardown aborts now and then in destroy_process_group) does not
    void the measurement and is only noted. No result at all is retried."""
    for attempt in range(1, attempts + 1):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        result = result_line(out.stdout)
        if result is not None:
            if out.returncode != 0:
                print(f"note: exit {out.returncode} after the result was printed "
                      f"(teardown): {' '.join(cmd[:4])} ...", file=sys.stderr, flush=True)
                result["teardown_exit_code"] = out.returncode
            return result
        print(f"attempt {attempt}/{attempts} gave no result (exit {out.returncode}): "
              f"{' '.join(cmd)}\n{out.stderr[-2000:]}", file=sys.stderr, flush=True)
    sys.exit(f"no result line after {attempts} attempts: {' '.join(cmd)}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ddprun", required=True)
    p.add_argument("--ddp-bench", required=True)
    p.add_argument("--torchrun", required=True)
    p.add_argument("--python-bench", default=os.path.join(os.path.dirname(__file__), "python_ddp_bench.py"))
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--nproc-per-node", type=int, default=2)
    p.add_argument("--configs", default=",".join(f"{i}/{m}" for i, m in CONFIGS),
                   help="impl/mode pairs, comma-separated (default: all)")
    p.add_argument("--name", default="ddp", help="file names: <out>/<name>.json, .md, .png")
    args = p.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", DDPRUN_LOG_LEVEL="warn")

    configs = [tuple(c.split("/", 1)) for c in args.configs.split(",")]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        sys.exit(f"unknown --configs {unknown}: expected some of "
                 f"{','.join(f'{i}/{m}' for i, m in CONFIGS)}")
    nproc = str(args.nproc_per_node)
    runs, summary = [], {}
    for model in args.models.split(","):
        steps, warmup = MODELS[model]
        common = ["--model", model, "--steps", str(steps), "--warmup", str(warmup),
                  "--backend", args.backend, "--device", args.device]
        times = {c: [] for c in configs}
        for _ in range(args.repeats):
            for impl, mode in configs:
                run_env = env
                if impl == "ddprun":
                    extra = {"ddp_view": ["--mode", "ddp", "--grad-view=true"],
                             "ddp_ring": ["--mode", "ddp", "--allgather-buckets-up-to-bytes", "0"],
                             "ddp_system": ["--mode", "ddp"]}.get(mode, ["--mode", mode])
                    if mode == "ddp_system":
                        run_env = dict(env, DDPRUN_HOST_ALLOCATOR="system")
                    cmd = [args.ddprun, "--standalone", "--nproc-per-node", nproc, "--",
                           args.ddp_bench] + extra + common
                else:
                    if mode == "ddp_keep":
                        run_env = dict(env, **KEEP_FREED_BLOCKS_ENV)
                    cmd = [args.torchrun, "--standalone", "--nproc-per-node", nproc,
                           args.python_bench, "--mode", "ddp" if mode == "ddp_keep" else mode] + common
                result = run(cmd, run_env)
                result["mode"] = mode
                runs.append(result)
                times[(impl, mode)].append(result["step_ms"])
                print(f"{model:9s} {impl:6s} {mode:9s} {result['step_ms']:9.3f} ms", flush=True)
        med = {f"{impl}/{mode}": statistics.median(v) for (impl, mode), v in times.items()}
        batch = runs[-1]["batch_per_rank"]

        def ratio(numerator, denominator):  # None where --configs left either out
            if numerator in med and denominator in med:
                return med[numerator] / med[denominator]
            return None

        def hidden(impl, mode="ddp"):
            keys = (f"{impl}/compute", f"{impl}/allreduce", f"{impl}/{mode}")
            if not all(k in med for k in keys):
                return None
            c, a, s = (med[k] for k in keys)
            return (c + a - s) / a

        world = args.nproc_per_node
        summary[model] = {
            "params": runs[-1]["params"], "batch_per_rank": batch, "step_ms": med,
            "step_ms_min": {f"{i}/{m}": min(v) for (i, m), v in times.items()},
            "step_ms_max": {f"{i}/{m}": max(v) for (i, m), v in times.items()},
            "samples_per_s": {k: world * batch * 1000 / v for k, v in med.items() if not k.endswith("allreduce")},
            "speedup_vs_torch_ddp": ratio("torch/ddp", "ddprun/ddp"),
            "speedup_vs_torch_ddp_keep": ratio("torch/ddp_keep", "ddprun/ddp"),
            "speedup_system_vs_torch_ddp": ratio("torch/ddp", "ddprun/ddp_system"),
            "speedup_ring_vs_torch_ddp": ratio("torch/ddp", "ddprun/ddp_ring"),
            "speedup_vs_naive": ratio("ddprun/naive", "ddprun/ddp"),
            "speedup_view_vs_torch_ddp": ratio("torch/ddp", "ddprun/ddp_view"),
            "speedup_view_vs_naive": ratio("ddprun/naive", "ddprun/ddp_view"),
            "hidden_fraction": {"ddprun": hidden("ddprun"), "ddprun_view": hidden("ddprun", "ddp_view"),
                                "torch": hidden("torch")},
        }

    os.makedirs(args.out, exist_ok=True)
    meta = {"world_size": args.nproc_per_node, "backend": args.backend, "device": args.device,
            "threads_per_rank": 1, "repeats": args.repeats,
            "statistic": "median step time", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "cpu_count": os.cpu_count(), "machine": machine.describe(args.out)}
    data = {"meta": meta, "summary": summary, "runs": runs}
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump(data, f, indent=2)
    how = "Gloo over loopback" if (args.backend, args.device) == ("gloo", "cpu") else \
        f"{args.backend} on {args.device} tensors"
    lines = [f"# DDP step time: {args.nproc_per_node} ranks on one machine, {how}, 1 thread per rank,",
             f"# median of {args.repeats} runs. samples/s counts both ranks. hidden = (compute + allreduce - step) / allreduce",
             machine.line(meta["machine"]),
             "#",
             "# model      params   batch/rank  impl    mode        step_ms   samples/s   (min..max step_ms)",
             ]
    for model, s in summary.items():
        for key, ms in s["step_ms"].items():
            impl, mode = key.split("/")
            sps = s["samples_per_s"].get(key)
            lines.append(f"  {model:9s} {s['params']:9d} {s['batch_per_rank']:7d}     {impl:7s} {mode:10s}"
                         f" {ms:9.3f} {('%10.0f' % sps) if sps else '         -'}"
                         f"   ({s['step_ms_min'][key]:.3f}..{s['step_ms_max'][key]:.3f})")
    lines += ["#", "# speedup = other's step time / ddprun's. ddp = defaults (as PyTorch's); ddp_view = gradientAsBucketView;",
              "# ddp_ring = every bucket by ring allreduce (allgatherBucketsUpToBytes 0, as PyTorch);",
              "# ddp_system = ddprun with glibc's own malloc thresholds (DDPRUN_HOST_ALLOCATOR=system);",
              "# torch ddp_keep = PyTorch DDP given ddprun's malloc thresholds through MALLOC_*_ variables",
              "# model      vs torch DDP  vs naive  view vs torch  view vs naive  ring vs torch  system vs torch"
              "  vs torch keep"
              "  hidden ddp  hidden view  hidden torch"]
    def cell(value, width, suffix=""):  # "-" where --configs left a side out
        return f"{value:{width}.2f}{suffix}" if value is not None else f"{'-':>{width}s}{' ' * len(suffix)}"

    for model, s in summary.items():
        h = s["hidden_fraction"]
        lines.append(f"  {model:9s} {cell(s['speedup_vs_torch_ddp'], 11, 'x')} {cell(s['speedup_vs_naive'], 8, 'x')}"
                     f" {cell(s['speedup_view_vs_torch_ddp'], 13, 'x')} {cell(s['speedup_view_vs_naive'], 13, 'x')}"
                     f" {cell(s['speedup_ring_vs_torch_ddp'], 13, 'x')}"
                     f" {cell(s['speedup_system_vs_torch_ddp'], 15, 'x')} {cell(s['speedup_vs_torch_ddp_keep'], 13, 'x')}"
                     f" {cell(h['ddprun'], 11)} {cell(h['ddprun_view'], 12)} {cell(h['torch'], 13)}")
    table = "\n".join(lines) + "\n"
    md = os.path.join(args.out, f"{args.name}.md")
    if set(configs) == set(CONFIGS):  # the chart shows every configuration
        table += plotting.write_beside("ddp", data, md)
    with open(md, "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
