#!/usr/bin/env bash
# Sets up what is missing, builds, and runs the whole test suite (ctest).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh"
build_dir=${DDPRUN_BUILD_DIR:-$repo/build}
t0=$(date +%s)
ctest --test-dir "$build_dir" --output-on-failure --timeout 600 "$@"
echo "[test] ctest took $(($(date +%s) - t0)) s" >&2
