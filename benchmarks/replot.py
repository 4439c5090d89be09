#!/usr/bin/env python3
"""Draws the benchmarks' PNGs again from their JSON, without running any benchmark:
benchmarks/results/<name>.json -> <out>/<name>.png for every name benchmarks/plotting.py
has a chart for (ddp, metrics_cost, launch, elastic, faults, checkpoint). The drivers draw the same chart after a
run; this is for a changed chart, or a run whose interpreter had no matplotlib.

Usage: replot.py [--results DIR] [--out DIR] [NAME...]
  --results  where the JSON files are (default: benchmarks/results)
  --out      where the PNGs go (default: the --results directory, beside the tables)
  NAME       only these benchmarks (default: every <name>.json that has a chart)
Exits 2 when a named benchmark has no chart or no JSON, or a JSON cannot be read.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import plotting  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=pathlib.Path, default=HERE / "results")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    out = args.out or args.results
    unknown = [n for n in args.names if n not in plotting.CHARTS]
    if unknown:
        parser.error(f"no chart for {', '.join(unknown)}; the charts are {', '.join(plotting.CHARTS)}")
    names = args.names or [n for n in plotting.CHARTS if (args.results / f"{n}.json").exists()]
    if not names:
        parser.error(f"no {{{','.join(plotting.CHARTS)}}}.json in {args.results}; expected the "
                     "results of benchmarks/*/run_*.py. HINT: pass --results DIR")
    for name in names:
        source = args.results / f"{name}.json"
        try:
            data = json.loads(source.read_text())
        except (OSError, json.JSONDecodeError) as error:
            print(f"replot: cannot read {source}: {error}; expected the JSON its driver wrote",
                  file=sys.stderr)
            return 2
        png = out / f"{name}.png"
        plotting.write_png(name, data, png)
        print(f"replot: wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
