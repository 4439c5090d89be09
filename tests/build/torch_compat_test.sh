#!/usr/bin/env bash
# ddprun builds against an older LibTorch than the pinned one: torch 2.11.0 (the oldest
# supported, what the GPU host's own Python has) is installed from PyPI without its CUDA
# packages (--no-deps) into a cache venv beside the pinned one, the CUDA-off configuration
# (whose libtorch_cpu needs none of them) is configured through DDPRUN_TORCH_PYTHON, built,
# and the 2-rank loopback suite (process groups and DDP over Gloo on 127.0.0.1) runs
# against it. Label `compat`, left out of the default run (a ~900 MB wheel, and a cold
# build of ~35 min on 2 busy cores; ~6 min with ccache): `bash scripts/test.sh -L compat`.
# The tests that start PyTorch's own Python beside our ranks are left out: a wheel without
# its CUDA packages cannot be imported.
# Usage: torch_compat_test.sh <source dir> <build dir> <ccache dir>
#   DDPRUN_COMPAT_TORCH  the torch version (default 2.11.0)
set -euo pipefail
src=$1 dir=$2 ccache_dir=$3
version=${DDPRUN_COMPAT_TORCH:-2.11.0}
fail() { echo "FAIL: $*" >&2; exit 1; }
now() { date +%s; }
t_start=$(now)

python=${DDPRUN_PYTHON_BASE:-python3}
py_ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
cache_dir=${DDPRUN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ddprun}
venv=$cache_dir/venv-torch-$version-py$py_ver
stamp=$venv/.ddprun-torch
if [[ "$(cat "$stamp" 2>/dev/null)" != "$version" ]]; then
  t0=$(now)
  echo "installing torch==$version (no CUDA packages) into $venv"
  [[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    "torch==$version" || fail "pip could not install torch==$version"
  echo "$version" >"$stamp"
  echo "pip took $(($(now) - t0)) s"
fi

# The interpreter is the only input: the build finds LibTorch through it (CMakeLists.txt).
export DDPRUN_TORCH_PYTHON=$venv/bin/python
t0=$(now)
# Configured every time (seconds): its last line names the torch found.
cmake -S "$src" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDDPRUN_WITH_CUDA=OFF \
  -DDDPRUN_WITH_MPI=OFF -DBUILD_BENCHMARKS=OFF -DDDPRUN_CCACHE_DIR="$ccache_dir" \
  >"$dir.configure.log" 2>&1 || { tail -30 "$dir.configure.log"; fail "configure failed"; }
line=$(grep -h '^-- ddprun: torch' "$dir.configure.log" || true)
echo "${line#-- }"
[[ $line == *"torch $version "* ]] || fail "configured against '$line', expected torch $version"
grep -q "^DDPRUN_PYTHON:FILEPATH=$venv/bin/python$" "$dir/CMakeCache.txt" ||
  fail "DDPRUN_TORCH_PYTHON was not taken: $(grep '^DDPRUN_PYTHON:' "$dir/CMakeCache.txt")"
grep -q '^#define HAVE_NCCL 0' "$dir/generated/runtime/config.h" || fail "HAVE_NCCL is not 0"
cmake --build "$dir" --target distributed_test distributed_worker distributed_data_parallel_test \
  ddp_worker -- -k 0 -j"${DDPRUN_COMPAT_JOBS:-2}" || fail "the build against torch $version failed"
echo "configure + build took $(($(now) - t0)) s"
# The runtime loads that torch's libtorch_cpu, and no CUDA library.
torch_lib=$(ldd "$dir/runtime/libddprun_runtime.so" | awk '$1 == "libtorch_cpu.so" {print $3}')
echo "libddprun_runtime.so loads $torch_lib"
[[ $torch_lib == "$venv"/* ]] || fail "libtorch_cpu.so is not the torch $version venv's: '$torch_lib'"

# The 2-rank loopback suite: ranks as processes on 127.0.0.1 over Gloo.
t0=$(now)
ctest --test-dir "$dir" --output-on-failure --timeout 300 \
  -R '(LoopbackGroupTest|DistributedTest|BadConfigTest|EquivalenceTest|DdpTest)\.' \
  -E '(PythonPeerTest|Mpirun|MatchesPyTorchDistributedDataParallel)' || fail "loopback suite failed"
echo "loopback suite took $(($(now) - t0)) s; whole test $(($(now) - t_start)) s"
echo PASS
