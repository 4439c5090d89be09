#!/usr/bin/env bash
# Sets up and builds (scripts/setup.sh), then runs the checkpoint benchmark (ddprun's
# Checkpointer against torch.save/torch.load and dd, and ddptrain's step time with and
# without checkpoints) and writes benchmarks/results/checkpoint.{json,md,png}. Arguments
# go to run_checkpoint_benchmark.py (e.g. --repeats 5, --params 25000000, --dir /data).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bash "$repo/scripts/setup.sh"
build_dir=${DDPRUN_BUILD_DIR:-$repo/build}
python=$(sed -n 's/^DDPRUN_PYTHON:FILEPATH=//p' "$build_dir/CMakeCache.txt")
"$python" "$repo/benchmarks/checkpoint/run_checkpoint_benchmark.py" \
  --ddprun "$build_dir/launcher/ddprun" --checkpoint-bench "$build_dir/benchmarks/checkpoint_bench" \
  --ddptrain "$build_dir/examples/ddptrain" --out "$repo/benchmarks/results" "$@"
