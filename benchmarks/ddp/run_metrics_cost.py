"""What watching a run costs its steps: mlp_small (the overhead-bound model, ~1 ms steps)
under ddprun, 2 ranks, Gloo, side by side in one run, alternating:

  off     ddprun --metrics-port 0; ddp_bench --mode ddp                (no metrics file)
  on      ddprun --metrics-port P; ddp_bench --mode ddp --metrics true (every step records
          what Trainer::fit records, the exporter writes each rank's file twice a second),
          and a scraper GETs /metrics every second (15 times Prometheus' 15 s interval)
  stress  as on, scraped every 100 ms (150 times): what a scraper that floods costs

cost = (median on - median off) / median off. Writes <out>/metrics_cost.json, .md and .png.
Target (issue 17): <= 2 %. On 2 cores the two ranks take both, so whatever the launcher and
the scraper do to answer a scrape is taken from the ranks: the stress row shows that part.
Step times on a shared 2-core machine scatter by more than 2 %, so the same run also times
each part in CPU time (benchmarks/metrics/metrics_bench.cpp) and states it as a share of
the median "off" step: the recording per step, the exporter per second, one scrape.

    run_metrics_cost.py --ddprun B --ddp-bench B --out DIR [--repeats 7] [--steps 3000]
"""
import argparse
import os
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import machine  # noqa: E402  benchmarks/machine.py: the machine in every result
import plotting  # noqa: E402  benchmarks/plotting.py: the PNG beside the table

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_ddp_benchmark import run  # noqa: E402  one configuration, with its retries


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scraper(threading.Thread):
    """GETs /metrics every `interval` until stopped; counts the pages and their bytes."""

    def __init__(self, port, interval=0.1):
        super().__init__(daemon=True)
        self.url, self.interval = f"http://127.0.0.1:{port}/metrics", interval
        self.stopping, self.pages, self.bytes = threading.Event(), 0, 0

    def run(self):
        while not self.stopping.wait(self.interval):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as reply:
                    self.bytes += len(reply.read())
                    self.pages += 1
            except OSError:
                pass  # not up yet, or gone: the run decides


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ddprun", required=True)
    p.add_argument("--ddp-bench", required=True)
    p.add_argument("--metrics-bench", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=3000)
    args = p.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", DDPRUN_LOG_LEVEL="warn")
    bench = ["--model", "mlp_small", "--steps", str(args.steps), "--warmup", "100", "--mode", "ddp"]

    intervals = {"on": 1.0, "stress": 0.1}  # seconds between scrapes
    times = {"off": [], "on": [], "stress": []}
    runs, scraped = [], {"on": [], "stress": []}
    for _ in range(args.repeats):
        for config in times:
            if config == "off":
                result = run([args.ddprun, "--standalone", "--nproc-per-node", "2",
                              "--metrics-port", "0", "--", args.ddp_bench] + bench, env)
            else:
                port = free_port()
                scraper = Scraper(port, intervals[config])
                scraper.start()
                result = run([args.ddprun, "--standalone", "--nproc-per-node", "2",
                              "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--",
                              args.ddp_bench, "--metrics", "true"] + bench, env)
                scraper.stopping.set()
                scraper.join()
                scraped[config].append(scraper.pages)
                result["pages_scraped"] = scraper.pages
            result["config"] = config
            runs.append(result)
            times[config].append(result["step_ms"])
            print(f"mlp_small metrics {config:3s} {result['step_ms']:8.4f} ms", flush=True)

    med = {c: statistics.median(v) for c, v in times.items()}
    parts_run = subprocess.run([args.metrics_bench, "--benchmark_format=json",
                                "--benchmark_min_time=0.5"], capture_output=True, text=True,
                               check=True, env=env)
    parts = {b["name"]: b["cpu_time"] for b in json.loads(parts_run.stdout)["benchmarks"]}  # ns
    step_ns = med["off"] * 1e6
    shares = {
        "recording per step / step": parts["BM_StepRecording"] / step_ns,
        "exporter per second / one core": 2 * parts["BM_ExportSnapshot"] / 1e9,
        "one scrape every 15 s / one core": parts["BM_RenderPage"] / 15 / 1e9,
    }
    spread = {c: {"min": min(v), "median": statistics.median(v), "max": max(v)} for c, v in times.items()}
    cost = (med["on"] - med["off"]) / med["off"]
    summary = {"step_ms": spread, "cost_fraction": cost,
               "stress_cost_fraction": (med["stress"] - med["off"]) / med["off"],
               "target_fraction": 0.02,
               "pages_scraped_per_run": {c: statistics.median(v) for c, v in scraped.items()},
               "parts_cpu_ns": parts, "part_shares": shares}
    meta = {"model": "mlp_small", "world_size": 2, "backend": "gloo", "threads_per_rank": 1,
            "repeats": args.repeats, "steps": args.steps, "scrape_interval_s": intervals,
            "statistic": "median step time", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "cpu_count": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "machine": machine.describe(args.out)}
    data = {"meta": meta, "summary": summary, "runs": runs}
    lines = ["# The metrics' cost to a step: mlp_small, 2 ranks, Gloo over loopback, 1 thread per rank,",
             f"# {args.steps} timed steps per run, {args.repeats} runs each, alternating; "
             f"{meta['cpu_count']} cores, {meta['memory_gib']} GiB.",
             machine.line(meta["machine"]),
             "# on = every step recorded as Trainer::fit does, each rank's file written twice a second,",
             "#      /metrics scraped every 1 s (15x Prometheus' 15 s); stress = scraped every 100 ms",
             "#",
             "# config   step_ms min   median      max",
             ]
    for config in times:
        s = spread[config]
        lines.append(f"  {config:7s} {s['min']:11.4f} {s['median']:8.4f} {s['max']:8.4f}")
    pages = summary["pages_scraped_per_run"]
    lines += ["#", f"# cost = (on - off) / off = {100 * cost:+.2f} % (target <= 2 %), "
              f"{pages['on']:.0f} pages scraped per run; stress: "
              f"{100 * summary['stress_cost_fraction']:+.2f} %, {pages['stress']:.0f} pages per run",
              "#", "# part by part, CPU time (metrics_bench):",
              f"#   recording per step     {parts['BM_StepRecording']:10.0f} ns",
              f"#   exporter, per write    {parts['BM_ExportSnapshot']:10.0f} ns (2 writes a second)",
              f"#   one scrape (2 ranks)   {parts['BM_RenderPage']:10.0f} ns"]
    lines += [f"#   {name:32s} {100 * share:.4f} %" for name, share in shares.items()]
    off = spread["off"]
    lines += ["#", f"# off alone scatters {100 * (off['max'] - off['min']) / off['median']:.0f} % of its "
              "median here: where that exceeds the target, the parts bound the cost, not the medians"]
    print(plotting.write_results("metrics_cost", data, lines, args.out))


if __name__ == "__main__":
    main()
