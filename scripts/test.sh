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
ctest --test-dir "$build_dir" --output-on-failure --timeout 600 "$@"
echo "[test] ctest took $(($(date +%s) - t0)) s" >&2
