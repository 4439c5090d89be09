#!/usr/bin/env bash
# The CUDA-off configuration (for CPU-only LibTorch users; MPI off too, so the one extra
# build covers both options) configures and builds, and
# its runtime carries no CUDA library. Builds the runtime and ddptrain in a separate
# build dir with the same torch and ccache.
# Usage: cuda_off_build_test.sh <source dir> <build dir> <python of the venv> <ccache dir>
set -euo pipefail
src=$1 dir=$2 python=$3 ccache_dir=$4
fail() { echo "FAIL: $*" >&2; exit 1; }
if [[ ! -f "$dir/build.ninja" ]]; then
  cmake -S "$src" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDDPRUN_WITH_CUDA=OFF \
    -DDDPRUN_WITH_MPI=OFF -DBUILD_TESTING=OFF -DBUILD_BENCHMARKS=OFF -DDDPRUN_PYTHON="$python" -DDDPRUN_CCACHE_DIR="$ccache_dir" >"$dir.configure.log" 2>&1 \
    || { tail -30 "$dir.configure.log"; fail "configure failed"; }
fi
grep -q '^#define HAVE_NCCL 0' "$dir/generated/runtime/config.h" || fail "HAVE_NCCL is not 0"
cmake --build "$dir" --target ddprun_runtime ddptrain ddprun
lib="$dir/runtime/libddprun_runtime.so"
needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "NEEDED of the CUDA-off runtime:"; echo "$needed" | sed 's/^/  /'
grep -Eq 'libtorch_cuda|libnccl|libcudart|libc10_cuda' <<<"$needed" && fail "CUDA library linked"
grep -qx libtorch_cpu.so <<<"$needed" || fail "libtorch_cpu missing"
version=$("$dir/examples/ddptrain" --version)
echo "$version"
grep -q 'CPU only' <<<"$version" || fail "unexpected: $version"
# Asking for NCCL in this build is a clear, permanent error.
set +e
out=$("$dir/examples/ddptrain" --backend nccl 2>&1); code=$?
set -e
echo "$out" | tail -1
[[ $code -eq 2 ]] || fail "--backend nccl exited $code, expected 2"
grep -q "this build has no CUDA/NCCL" <<<"$out" || fail "no clear error for nccl"
echo PASS
