#!/usr/bin/env bash
# Sets up and builds (scripts/setup.sh), then runs the DDP benchmark side by side and
# writes benchmarks/results/ddp.{json,md}. Arguments go to run_ddp_benchmark.py.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bash "$repo/scripts/setup.sh"
build_dir=${DDPRUN_BUILD_DIR:-$repo/build}
python=$(sed -n 's/^DDPRUN_PYTHON:FILEPATH=//p' "$build_dir/CMakeCache.txt")
"$python" "$repo/benchmarks/ddp/run_ddp_benchmark.py" \
  --ddprun "$build_dir/launcher/ddprun" --ddp-bench "$build_dir/benchmarks/ddp_bench" \
  --torchrun "$(dirname "$python")/torchrun" --out "$repo/benchmarks/results" "$@"
