#!/usr/bin/env bash
# The main job: sets up what is missing, builds, and trains the LeNet-style CNN on
# Fashion-MNIST with 2 ranks on this machine (CPU, Gloo), launched by ddprun.
# Extra arguments go to ddptrain (e.g. --epochs 3, --model mlp).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Only what the job runs: the tests and benchmarks are scripts/test.sh's to build.
bash "$repo/scripts/setup.sh" --targets ddprun ddptrain
build_dir=${DDPRUN_BUILD_DIR:-$repo/build}
exec "$build_dir/launcher/ddprun" --standalone --nproc-per-node "${NPROC:-2}" -- \
  "$build_dir/examples/ddptrain" --model cnn --data idx --data-dir /usr/share/datasets/fashion-mnist "$@"
