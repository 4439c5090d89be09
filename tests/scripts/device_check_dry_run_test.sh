#!/usr/bin/env bash
# scripts/device_check.sh --dry-run, as prepared before a GPU host is lent: it lists every
# step and what travels with its size, runs nothing, and refuses when the carried files are
# missing or over the 64 MiB that travel. Fake carried folders stand in for
# scripts/fetch_host_deps.sh's (no download). A few seconds.
# Usage: device_check_dry_run_test.sh <source dir>
set -uo pipefail
src=$1
fail() { echo "FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check=$src/scripts/device_check.sh
export DDPRUN_CHECK_BUILD_DIR=$tmp/build-gpu

# Ready: small carried folders.
mkdir -p "$tmp/deps/debs" "$tmp/deps/data/fashion-mnist"
head -c 1000 /dev/zero >"$tmp/deps/debs/libfake_1.0_amd64.deb"
head -c 2000 /dev/zero >"$tmp/deps/data/fashion-mnist/train-images-idx3-ubyte.gz"
out=$(DDPRUN_HOST_DEPS=$tmp/deps bash "$check" --dry-run --out "$tmp/out" 2>&1); rc=$?
echo "$out"
((rc == 0)) || fail "dry run exited $rc"
for step in deps configure build gpu_tests bench_cuda_gloo bench_cpu bench_cuda_nccl; do
  grep -Eq "^  $step +" <<<"$out" || fail "step $step is not listed"
done
grep -q -- "-DDDPRUN_WITH_MPI=OFF" <<<"$out" || fail "the configure step does not leave MPI out"
grep -Eq "^  working tree +[0-9]+ files" <<<"$out" || fail "no size of the working tree"
grep -Eq "/debs +1 files +1000" <<<"$out" || fail "the carried .deb files are not counted"
grep -Eq "^  total .* of 64MiB allowed" <<<"$out" || fail "no total against the limit"
grep -qx READY <<<"$out" || fail "not READY"
[[ ! -e $tmp/out && ! -e $tmp/build-gpu ]] || fail "the dry run wrote results or a build"

# Not fetched: says what to run.
out=$(DDPRUN_HOST_DEPS=$tmp/none bash "$check" --dry-run 2>&1); rc=$?
((rc == 1)) || fail "missing carried files: exit $rc, expected 1"
grep -q "missing: run scripts/fetch_host_deps.sh" <<<"$out" || fail "no hint for missing files: $out"

# Too large to travel (a sparse 65 MiB file).
truncate -s 65M "$tmp/deps/data/fashion-mnist/huge"
out=$(DDPRUN_HOST_DEPS=$tmp/deps bash "$check" --dry-run 2>&1); rc=$?
((rc == 1)) || fail "over 64 MiB: exit $rc, expected 1"
grep -q "over the 64 MiB that travel" <<<"$out" || fail "no word of the limit: $out"

# A wrong argument is a usage error.
out=$(bash "$check" --dryrun 2>&1); rc=$?
((rc == 2)) || fail "unknown argument: exit $rc, expected 2"
grep -q "unknown argument '--dryrun'" <<<"$out" || fail "unclear usage error: $out"

# The package list is the fetch script's own (no download with --list).
# (Read whole first: grep -q leaving early would end the script with SIGPIPE, under pipefail.)
list=$(bash "$src/scripts/fetch_host_deps.sh" --list) || fail "fetch_host_deps --list exited $?"
grep -qx libspdlog-dev <<<"$list" || fail "fetch_host_deps --list has no libspdlog-dev: $list"
echo PASS
