#!/usr/bin/env bash
# ddprun as an installed library (README, "Your own training program"): installs the
# build into a temporary prefix, checks the layout, configures and builds
# examples/custom_loop (a copy, outside the tree) against the prefix with nothing but
# CMAKE_PREFIX_PATH, and runs it with 2 ranks under the installed ddprun. The example
# compiling is also the check that the public headers are self-contained: it calls
# dist.group->allreduce(...) with only "runtime/ddprun.h" and <torch/torch.h> included.
# About 5 s with a warm ccache, 40 s cold on 2 cores (one LibTorch-heavy compile, no PCH).
# Usage: custom_loop_install_test.sh <source dir> <build dir> [<ccache dir>]
set -euo pipefail
src=$1 build=$2 ccache_dir=${3:-}
fail() { echo "FAIL: $*" >&2; exit 1; }
now() { date +%s; }
tmp=$(mktemp -d /tmp/ddprun_install_test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
t0=$(now)

# --- 1. Install and check the layout ---------------------------------------------------
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" \
  || { cat "$tmp/install.log"; fail "cmake --install $build failed"; }
lib=$(find "$prefix" -name libddprun_runtime.so -printf '%h\n' | head -1)
[[ -n "$lib" ]] || fail "no libddprun_runtime.so under $prefix"
for f in bin/ddprun bin/ddptrain \
         include/ddprun/runtime/ddprun.h include/ddprun/runtime/distributed.h \
         include/ddprun/runtime/config.h include/ddprun/runtime/ddp/distributed_data_parallel.h \
         include/ddprun/runtime/env/cluster_env.h; do
  [[ -e "$prefix/$f" ]] || fail "$f not installed"
done
for f in ddprunConfig.cmake ddprunConfigVersion.cmake ddprunTargets.cmake; do
  [[ -e "$lib/cmake/ddprun/$f" ]] || fail "${lib#"$prefix"/}/cmake/ddprun/$f not installed"
done
[[ ! -e "$prefix/include/ddprun/runtime/torch_pch.h" ]] || fail "the PCH header was installed"
# The package must not point back into the tree it was built from.
if grep -rlF -e "$build" -e "$src" "$lib/cmake/ddprun"; then
  fail "the installed CMake package names the source or build tree"
fi
# The installed binaries load the installed runtime (RPATH $ORIGIN/../lib) and find LibTorch.
for exe in ddptrain; do
  deps=$(ldd "$prefix/bin/$exe")
  loaded=$(awk '$1 == "libddprun_runtime.so" { print $3 }' <<<"$deps")
  [[ -n "$loaded" && $(realpath "$loaded") == $(realpath "$lib/libddprun_runtime.so") ]] \
    || fail "$exe loads the runtime from '$loaded', not from $lib:"$'\n'"$deps"
  ! grep -q 'not found' <<<"$deps" || fail "$exe has unresolved libraries:"$'\n'"$deps"
done
"$prefix/bin/ddptrain" --version
t1=$(now)

# --- 2. Configure and build the example against the prefix, as a user would ----------------
cp -r "$src/examples/custom_loop" "$tmp/src"
args=(-DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=RelWithDebInfo)
command -v ninja >/dev/null && args+=(-G Ninja)
if [[ -n "$ccache_dir" ]] && command -v ccache >/dev/null; then
  # Paths under $tmp are hashed relative to it, so reruns (new $tmp each time) hit.
  args+=("-DCMAKE_CXX_COMPILER_LAUNCHER=env;CCACHE_DIR=$ccache_dir;CCACHE_BASEDIR=$tmp;CCACHE_NOHASHDIR=1;CCACHE_SLOPPINESS=time_macros,include_file_mtime,include_file_ctime;ccache")
fi
cmake -S "$tmp/src" -B "$tmp/build" "${args[@]}" >"$tmp/configure.log" 2>&1 \
  || { cat "$tmp/configure.log"; fail "configuring examples/custom_loop against $prefix failed"; }
cmake --build "$tmp/build" >"$tmp/build.log" 2>&1 \
  || { tail -60 "$tmp/build.log"; fail "building examples/custom_loop failed"; }
t2=$(now)

# --- 3. Run it with 2 ranks under the installed launcher -----------------------------------
set +e
out=$("$prefix/bin/ddprun" --standalone --nproc-per-node 2 -- "$tmp/build/custom_loop" 2>&1)
code=$?
set -e
echo "$out"
[[ $code -eq 0 ]] || fail "custom_loop under ddprun exited $code"
grep -Eq 'step [0-9]+/[0-9]+ loss [0-9.e+-]+' <<<"$out" || fail "no loss line"
grep -q 'parameters identical on every rank' <<<"$out" || fail "no final check line"
# The same program through the library's Trainer: its own loss, metric and file-backed data.
set +e
out=$("$prefix/bin/ddprun" --standalone --nproc-per-node 2 -- "$tmp/build/custom_loop" --trainer 2>&1)
code=$?
set -e
echo "$out"
[[ $code -eq 0 ]] || fail "custom_loop --trainer under ddprun exited $code"
grep -q 'custom_loop --trainer: 2 ranks, 60 steps, test mae' <<<"$out" || fail "no --trainer line"
# With checkpoints: the journal and the completion marker, 0640; run again, it ends at once.
for attempt in 1 2; do
  set +e
  out=$("$prefix/bin/ddprun" --standalone --nproc-per-node 2 -- "$tmp/build/custom_loop" \
    --trainer --checkpoint-dir "$tmp/checkpoints" 2>&1)
  code=$?
  set -e
  echo "$out"
  [[ $code -eq 0 ]] || fail "custom_loop --trainer --checkpoint-dir (run $attempt) exited $code"
done
grep -q 'custom_loop --trainer: already complete at step 60' <<<"$out" \
  || fail "the second run did not see the completion marker"
for file in checkpoint-00000060.pt run-journal.jsonl run-complete.json; do
  [[ $(stat -c %a "$tmp/checkpoints/$file") == 640 ]] || fail "$file: mode $(stat -c %a "$tmp/checkpoints/$file"), expected 640"
done
# A bad --steps is a usage error that says what it expected (strtoll took "" as 0 and
# clamped 99999999999999999999 to 2^63 - 1 steps, a run without end).
for steps in 99999999999999999999 ""; do
  set +e
  out=$(timeout 60 "$tmp/build/custom_loop" --steps "$steps" 2>&1)
  code=$?
  set -e
  [[ $code -eq 2 ]] || fail "custom_loop --steps '$steps' exited $code, expected 2: $out"
  grep -qF -- "--steps=$steps: expected a decimal integer in [0, 1000000]; found" <<<"$out" \
    || fail "custom_loop --steps '$steps' did not say what it expected: $out"
done
t3=$(now)
echo "install+checks $((t1 - t0)) s, configure+build $((t2 - t1)) s, run $((t3 - t2)) s"
echo PASS
