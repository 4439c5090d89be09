#!/usr/bin/env bash
# The CUDA configuration carries libtorch_cuda and NCCL for real: the runtime library
# needs them (readelf), calls into NCCL (nm), and the wheel's copies resolve (ldd).
# Usage: cuda_linkage_test.sh <libddprun_runtime.so> <ddptrain>
set -euo pipefail
lib=$1 ddptrain=$2
fail() { echo "FAIL: $*" >&2; exit 1; }
needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "NEEDED of $(basename "$lib"):"; echo "$needed" | sed 's/^/  /'
for want in libtorch_cuda.so libnccl.so.2 libcudart.so.13 libtorch_cpu.so; do
  grep -qx "$want" <<<"$needed" || fail "$lib does not need $want"
done
# (Captured first: grep -q closing the pipe early would fail the pipeline under pipefail.)
undefined=$(nm -DC --undefined-only "$lib")
grep -E ' (ncclGetVersion|c10d::ProcessGroupNCCL::ProcessGroupNCCL\(.*)$' <<<"$undefined" | sed 's/^ */  /'
grep -q ' ncclGetVersion$' <<<"$undefined" || fail "no NCCL symbol referenced"
grep -q 'c10d::ProcessGroupNCCL::ProcessGroupNCCL(' <<<"$undefined" || fail "ProcessGroupNCCL not referenced"
resolved=$(ldd "$lib")
grep -E 'libnccl.so.2 => .*/nvidia/nccl/lib/' <<<"$resolved" || fail "libnccl.so.2 not the wheel's"
grep -E 'libcudart.so.13 => .*/nvidia/cu13/lib/' <<<"$resolved" || fail "libcudart not the wheel's"
grep -E 'libtorch_cuda.so => ' <<<"$resolved" | grep -v 'not found' || fail "libtorch_cuda unresolved"
# NCCL and the CUDA runtime answer without a GPU.
version=$("$ddptrain" --version)
echo "$version"
grep -Eq 'CUDA runtime 13\.[0-9]+, NCCL 2\.[0-9]+\.[0-9]+' <<<"$version" || fail "unexpected: $version"
echo PASS
