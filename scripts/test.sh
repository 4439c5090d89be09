#!/usr/bin/env bash
# Sets up what is missing, builds, and runs the whole test suite (ctest).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh"
build_dir=${DDPRUN_BUILD_DIR:-$repo/build}
t0=$(date +%s)
# Every ddprun serves metrics on 9410 by default, and ctest runs tests in parallel: they would
# race for that one port. The tests of the endpoint choose free ports of their own.
export DDPRUN_METRICS_PORT=${DDPRUN_METRICS_PORT:-0}
# Labels left out unless asked for (a regular expression of labels): image builds the
# images with buildah, which downloads torch wheels (the CPU image ~7 min; the CUDA one
# ~4 GB of wheels and up to 72 min; a user's image on the SDK); compat builds against the
# oldest supported torch (a ~900 MB wheel, ~35 min cold). `bash scripts/test.sh -L image`
# or `-L compat` runs them; DDPRUN_TEST_SKIP_LABELS= (empty) runs everything.
skip=${DDPRUN_TEST_SKIP_LABELS-image|compat}
skip_args=()
# Asking for labels (-L ...) asks for exactly those.
if [[ -n $skip && " $* " != *" -L "* ]]; then skip_args=(-LE "$skip"); fi
ctest --test-dir "$build_dir" --output-on-failure --timeout 600 "${skip_args[@]}" "$@"
echo "[test] ctest took $(($(date +%s) - t0)) s" >&2
