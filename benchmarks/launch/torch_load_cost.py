"""What loading LibTorch would add to ddprun's start (Note [The c10d rendezvous is a
module] in launcher/node_rendezvous.h): `ddprun --version` as built (no LibTorch), and
the same with the c10d rendezvous module preloaded (LD_PRELOAD: the module, the runtime
and libtorch_cpu are loaded and relocated before main, as if ddprun linked them).
Median of N runs each, interleaved. Writes benchmarks/results/launch_torch_load.txt.

Usage: torch_load_cost.py DDPRUN MODULE [--runs 20]
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import statistics
import subprocess
import time

REPO = pathlib.Path(__file__).resolve().parent.parent.parent


def once(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ddprun")
    parser.add_argument("module")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    plain = dict(os.environ)
    preloaded = dict(os.environ, LD_PRELOAD=str(pathlib.Path(args.module).resolve()))
    argv = [args.ddprun, "--version"]
    once(argv, plain), once(argv, preloaded)  # warm the page cache
    without, with_torch = [], []
    for _ in range(args.runs):
        without.append(once(argv, plain))
        with_torch.append(once(argv, preloaded))
    lines = [
        "# ddprun --version start-up, median of %d runs, ms (%s)" % (
            args.runs, datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        "#  variant                                   median      min",
        "   ddprun (no LibTorch)                    %8.1f %8.1f" % (statistics.median(without), min(without)),
        "   ddprun + c10d module (LibTorch loaded)  %8.1f %8.1f" % (statistics.median(with_torch), min(with_torch)),
        "# cost of loading LibTorch: %.1f ms" % (statistics.median(with_torch) - statistics.median(without)),
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    (REPO / "benchmarks/results/launch_torch_load.txt").write_text(text)


if __name__ == "__main__":
    main()
