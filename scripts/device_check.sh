#!/usr/bin/env bash
# The one device check: on a host with at least one CUDA GPU and its own Python with torch
# (2.11 or newer), but none of our Debian packages and no registry, in under 8 minutes:
#   1. unpacks the .deb files of scripts/fetch_host_deps.sh into a prefix (never into /),
#   2. configures and builds against the host's torch (DDPRUN_TORCH_PYTHON, default
#      python3), MPI off,
#   3. runs the gpu tests (tests/gpu/gpu_test.cpp): ddptrain on CUDA, NCCL with one rank
#      and Gloo with two ranks sharing the GPU (NCCL with two ranks given two GPUs), to the
#      CPU suite's accuracy target; DDP on CUDA tensors against a single process; a CUDA
#      checkpoint resumed on the CPU and the reverse,
#   4. the DDP benchmark on CUDA tensors, ddprun's DDP against PyTorch's on the same GPU,
#   5. the CPU DDP benchmark with communication on spare cores (lenet: ddprun vs naive).
# Prints one table and writes gpu.md, gpu.json and device_check.log to the output folder.
# Each step stops at the time left of the budget; what did not run is in the table.
#
# Usage: scripts/device_check.sh [--dry-run] [--out DIR]
#   --dry-run  list what would run and what travels (with its size, <= 64 MiB), run nothing
#   --out DIR  results (default: $OUT when set, else benchmarks/results)
# Environment: DDPRUN_TORCH_PYTHON (python3), DDPRUN_CHECK_BUDGET_S (450),
#   DDPRUN_CHECK_BUILD_DIR (build-gpu), DDPRUN_HOST_DEPS (.host-deps)
# Here, before a GPU host is lent: bash scripts/fetch_host_deps.sh; then on the host, from
# a copy of the working tree with .host-deps/debs and .host-deps/data carried:
#   bash scripts/device_check.sh --out "$OUT"
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dry_run=0
out=${OUT:-$repo/benchmarks/results}
while (($#)); do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    --out=*) out=${1#--out=} ;;
    *) echo "device_check: unknown argument '$1'; expected --dry-run or --out DIR" >&2; exit 2 ;;
  esac
  shift
done

python=${DDPRUN_TORCH_PYTHON:-python3}
budget=${DDPRUN_CHECK_BUDGET_S:-450}
deps=${DDPRUN_HOST_DEPS:-$repo/.host-deps}
prefix=$deps/prefix
build=${DDPRUN_CHECK_BUILD_DIR:-$repo/build-gpu}
work=$build/device-check
travel_limit=$((64 * 1024 * 1024))
jobs=$(nproc)
# What travels besides the working tree: the .deb files and the data (not the prefix,
# remade on the host from the .deb files).
carried=("$deps/debs" "$deps/data")
targets=(ddptrain ddprun ddp_worker gpu_test ddp_bench)
# Benchmarks: both DDPs on CUDA tensors of one GPU (Gloo, 2 ranks sharing it; NCCL, 1 rank),
# and the CPU benchmark on 16 idle cores.
cuda_configs=ddprun/ddp,ddprun/compute,ddprun/allreduce,torch/ddp,torch/compute,torch/allreduce
cpu_configs=ddprun/ddp,ddprun/naive,ddprun/compute,ddprun/allreduce,torch/ddp,torch/compute,torch/allreduce

# The steps, in order: name|what it runs.
plan=(
  "deps|scripts/fetch_host_deps.sh --unpack: $(ls "$deps"/debs/*.deb 2>/dev/null | wc -l) .deb files into $prefix"
  "configure|cmake -G Ninja -DDDPRUN_PYTHON=\$DDPRUN_TORCH_PYTHON -DDDPRUN_WITH_MPI=OFF -DCMAKE_PREFIX_PATH=$prefix/usr (pkgconf from the prefix)"
  "build|cmake --build $build --target ${targets[*]} -j\$(nproc)"
  "gpu_tests|gpu_test (ctest label gpu): CudaTrainingTest (nccl world 1, gloo world 2 on one GPU, nccl world 2 given 2 GPUs; >= 0.88 on Fashion-MNIST), CudaEquivalenceTest (DDP on CUDA tensors vs one process), CrossDeviceCheckpointTest (cuda->cpu, cpu->cuda)"
  "bench_cuda_gloo|run_ddp_benchmark.py --backend gloo --device cuda --nproc-per-node 2 --models lenet,big --repeats 2 --configs $cuda_configs"
  "bench_cpu|run_ddp_benchmark.py --backend gloo --device cpu --nproc-per-node 2 --models lenet --repeats 2 --configs $cpu_configs (communication on spare cores)"
  "bench_cuda_nccl|run_ddp_benchmark.py --backend nccl --device cuda --nproc-per-node 1 --models lenet --repeats 1 --configs $cuda_configs"
)

human() { numfmt --to=iec-i --suffix=B "$1" 2>/dev/null || echo "$1 B"; }

if ((dry_run)); then
  echo "device_check --dry-run: nothing is run."
  echo "On the GPU host (budget ${budget} s; each step gets what is left), results to $out:"
  for step in "${plan[@]}"; do printf '  %-16s %s\n' "${step%%|*}" "${step#*|}"; done
  echo
  echo "What travels: the working tree (tracked and untracked-not-ignored files) and the carried paths:"
  tree_bytes=$(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 -r stat -c %s 2>/dev/null |
    awk '{s += $1} END {print s + 0}')
  tree_files=$(cd "$repo" && git ls-files -co --exclude-standard | wc -l)
  printf '  %-22s %6d files %10s\n' "working tree" "$tree_files" "$(human "$tree_bytes")"
  total=$tree_bytes
  missing=0
  for path in "${carried[@]}"; do
    if [[ ! -e $path ]]; then
      printf '  %-22s missing: run scripts/fetch_host_deps.sh\n' "${path#"$repo"/}"
      missing=1
      continue
    fi
    bytes=$(find "$path" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    files=$(find "$path" -type f | wc -l)
    printf '  %-22s %6d files %10s\n' "${path#"$repo"/}" "$files" "$(human "$bytes")"
    total=$((total + bytes))
  done
  printf '  %-22s %19s of %s allowed\n' "total" "$(human "$total")" "$(human "$travel_limit")"
  echo
  echo "Run there as: bash scripts/device_check.sh --out \$OUT   (carry: ${carried[*]#"$repo"/})"
  if ((missing)); then echo "NOT READY: carried paths are missing" >&2; exit 1; fi
  if ((total > travel_limit)); then echo "NOT READY: over the 64 MiB that travel" >&2; exit 1; fi
  echo "READY"
  exit 0
fi

mkdir -p "$out" "$work"
log=$out/device_check.log
: >"$log"
start=$(date +%s)
results=$work/steps.tsv  # name, status, seconds, detail
: >"$results"
say() { echo "[device_check] $*" | tee -a "$log" >&2; }
left() { echo $((budget - ($(date +%s) - start))); }
# run_step NAME MIN_SECONDS CMD...: runs CMD with what is left of the budget, its output
# to the log; records PASS, FAIL (exit code) or SKIP (no time left).
run_step() {
  local name=$1 need=$2 t0 rc remaining
  shift 2
  remaining=$(left)
  if ((remaining < need)); then
    printf '%s\tSKIP\t0\tno time left (%s s of the budget, needs %s)\n' "$name" "$remaining" "$need" >>"$results"
    say "$name: skipped, $remaining s left"
    return 1
  fi
  say "$name: $* (at most $remaining s)"
  t0=$(date +%s)
  timeout --kill-after=10 "$remaining" "$@" >>"$log" 2>&1
  rc=$?
  local status=PASS detail=""
  if ((rc == 124 || rc == 137)); then status=FAIL detail="stopped at the budget"
  elif ((rc != 0)); then status=FAIL detail="exit $rc"; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - t0))" "$detail" >>"$results"
  say "$name: $status $detail ($(($(date +%s) - t0)) s)"
  [[ $status == PASS ]]
}

# --- what this host is --------------------------------------------------------------------
{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  "$python" -c 'import torch, sys; print(f"torch: {torch.__version__} (CUDA {torch.version.cuda}, '\
'{torch.cuda.device_count()} devices visible), python {sys.version.split()[0]}")' 2>&1
  echo "cores: $(nproc)"
} | tee "$work/host.txt" | tee -a "$log" >&2

export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PKG_CONFIG_SYSROOT_DIR=$prefix
export DDPRUN_TORCH_PYTHON=$python DDPRUN_METRICS_PORT=0
export DDPRUN_FASHION_MNIST=$deps/data/fashion-mnist

built=0
if run_step deps 5 bash "$repo/scripts/fetch_host_deps.sh" --unpack &&
  run_step configure 20 cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDDPRUN_PYTHON="$python" -DDDPRUN_WITH_MPI=OFF -DCMAKE_PREFIX_PATH="$prefix/usr" \
    -DPKG_CONFIG_EXECUTABLE="$prefix/usr/bin/pkgconf" &&
  run_step build 60 cmake --build "$build" --target "${targets[@]}" -- -j"$jobs"; then
  built=1
fi

# A torchrun for the host's Python (its venv may have no torchrun script on the PATH).
torchrun=$work/torchrun
printf '#!/bin/sh\nexec "%s" -m torch.distributed.run "$@"\n' "$python" >"$torchrun"
chmod +x "$torchrun"
bench() {  # bench NAME ARGS...: run_ddp_benchmark.py into $work/NAME.{json,md}
  local name=$1
  shift
  run_step "$name" 30 "$python" "$repo/benchmarks/ddp/run_ddp_benchmark.py" \
    --ddprun "$build/launcher/ddprun" --ddp-bench "$build/benchmarks/ddp_bench" \
    --torchrun "$torchrun" --out "$work" --name "$name" "$@"
}
if ((built)); then
  run_step gpu_tests 60 "$build/tests/gpu_test" --gtest_output="json:$work/gpu_tests.json"
  # Most wanted first: what is left when the budget runs out is skipped (each run starts
  # processes and torch: ~4 s).
  bench bench_cuda_gloo --backend gloo --device cuda --nproc-per-node 2 --models lenet,big \
    --repeats 2 --configs "$cuda_configs"
  bench bench_cpu --backend gloo --device cpu --nproc-per-node 2 --models lenet --repeats 2 \
    --configs "$cpu_configs"
  bench bench_cuda_nccl --backend nccl --device cuda --nproc-per-node 1 --models lenet \
    --repeats 1 --configs "$cuda_configs"
else
  for name in gpu_tests bench_cuda_gloo bench_cpu bench_cuda_nccl; do
    printf '%s\tSKIP\t0\tnot built\n' "$name" >>"$results"
  done
fi

# --- one table: gpu.md and gpu.json ---------------------------------------------------------
"$python" - "$work" "$out" "$(($(date +%s) - start))" <<'EOF' | tee -a "$log"
import json, os, sys
work, out, wall = sys.argv[1], sys.argv[2], int(sys.argv[3])
steps = []
for line in open(os.path.join(work, "steps.tsv")):
    name, status, seconds, detail = line.rstrip("\n").split("\t")
    steps.append({"step": name, "status": status, "seconds": int(seconds), "detail": detail})
host = open(os.path.join(work, "host.txt")).read().strip().splitlines()
tests = []
path = os.path.join(work, "gpu_tests.json")
if os.path.exists(path):
    for suite in json.load(open(path)).get("testsuites", []):
        for t in suite.get("testsuite", []):
            skipped = t.get("result") == "SKIPPED"
            failed = bool(t.get("failures"))
            tests.append({"test": f"{suite['name']}.{t['name']}",
                          "status": "FAIL" if failed else "SKIP" if skipped else "PASS",
                          "seconds": float(str(t.get("time", "0")).rstrip("s") or 0),
                          "test_accuracy": t.get("test_accuracy"),
                          "max_abs_diff": t.get("max_abs_diff")})
benches = {}
for name in ("bench_cuda_gloo", "bench_cpu", "bench_cuda_nccl"):
    path = os.path.join(work, f"{name}.json")
    if os.path.exists(path):
        benches[name] = json.load(open(path))
lines = ["# GPU device check (scripts/device_check.sh)", ""] + [f"    {h}" for h in host] + [
    "", f"wall {wall} s", "", "| step | status | s | detail |", "| --- | --- | ---: | --- |"]
lines += [f"| {s['step']} | {s['status']} | {s['seconds']} | {s['detail']} |" for s in steps]
if tests:
    lines += ["", "| gpu test | status | s | test_accuracy | max_abs_diff |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {t['test']} | {t['status']} | {t['seconds']:.1f} | {t['test_accuracy'] or ''} | "
              f"{t['max_abs_diff'] or ''} |" for t in tests]
for name, data in benches.items():
    meta = data["meta"]
    lines += ["", f"{name}: {meta['world_size']} ranks, {meta['backend']}, {meta['device']} tensors, "
              f"median of {meta['repeats']}", "",
              "| model | impl/mode | step_ms | samples/s |", "| --- | --- | ---: | ---: |"]
    for model, s in data["summary"].items():
        for key, ms in s["step_ms"].items():
            sps = s["samples_per_s"].get(key)
            lines.append(f"| {model} | {key} | {ms:.3f} | {sps:.0f} |" if sps else f"| {model} | {key} | {ms:.3f} | |")
        for key in ("speedup_vs_torch_ddp", "speedup_vs_naive"):
            if s.get(key) is not None:
                lines.append(f"| {model} | {key} | {s[key]:.2f}x | |")
table = "\n".join(lines) + "\n"
open(os.path.join(out, "gpu.md"), "w").write(table)
json.dump({"host": host, "wall_s": wall, "steps": steps, "gpu_tests": tests, "benchmarks": benches},
          open(os.path.join(out, "gpu.json"), "w"), indent=2)
print(table)
failed = [s["step"] for s in steps if s["status"] != "PASS"] + [t["test"] for t in tests if t["status"] == "FAIL"]
print("device_check:", "FAILED: " + ", ".join(failed) if failed else "every step passed")
sys.exit(1 if failed else 0)
EOF
