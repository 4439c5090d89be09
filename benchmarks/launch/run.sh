#!/usr/bin/env bash
# Sets up and builds (scripts/setup.sh), then runs the launch benchmark side by side
# (ddprun + launch_worker against torchrun + launch_worker.py) and writes
# benchmarks/results/launch.{json,md}. Arguments go to run_launch_benchmark.py.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bash "$repo/scripts/setup.sh"
build_dir=${DDPRUN_BUILD_DIR:-$repo/build}
python=$(sed -n 's/^DDPRUN_PYTHON:FILEPATH=//p' "$build_dir/CMakeCache.txt")
"$python" "$repo/benchmarks/launch/run_launch_benchmark.py" \
  --ddprun "$build_dir/launcher/ddprun" --launch-worker "$build_dir/benchmarks/launch_worker" \
  --torchrun "$(dirname "$python")/torchrun" --out "$repo/benchmarks/results" "$@"
