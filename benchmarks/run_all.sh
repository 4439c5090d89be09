#!/usr/bin/env bash
# One report: runs every benchmark under benchmarks/ one after another, each writing its
# table, JSON and PNG to benchmarks/results/ (<name>.md, <name>.json, <name>.png), then
# prints where they are. A benchmark that needs what this machine lacks (root, network
# namespaces) is skipped with a line saying why; one that fails is named at the end and
# the script exits 1.
#
# Usage: benchmarks/run_all.sh [--only NAME[,NAME]] [--repeats N] [--no-setup]
#                              [--NAME-args "ARGS"]...
#   --only       run these (default: all, in this order):
#                ddp, metrics_cost, launch, checkpoint, elastic, faults
#   --repeats N  each benchmark's own repeat flag (ddp, metrics_cost, launch, checkpoint:
#                --repeats; elastic: --runs); faults runs each row once
#   --no-setup   use the binaries in the build directory as they are (default: first
#                scripts/setup.sh, which installs what is missing and builds)
#   --NAME-args  more arguments for one driver, e.g. --checkpoint-args "--params 25000000"
# DDPRUN_BUILD_DIR picks the build directory (default: build/).
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
all=(ddp metrics_cost launch checkpoint elastic faults)
only="" repeats="" setup=1
declare -A extra=()
while (($#)); do
  case $1 in
    --only) only=$2; shift 2 ;;
    --only=*) only=${1#*=}; shift ;;
    --repeats) repeats=$2; shift 2 ;;
    --repeats=*) repeats=${1#*=}; shift ;;
    --no-setup) setup=0; shift ;;
    --*-args)
      name=${1#--}; name=${name%-args}; name=${name//-/_}
      extra[$name]=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set /p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1'; expected --only, --repeats, --no-setup or --NAME-args (--help)" >&2
       exit 2 ;;
  esac
done
names=("${all[@]}")
if [[ -n $only ]]; then
  IFS=, read -r -a names <<<"$only"
  for name in "${names[@]}"; do
    if [[ " ${all[*]} " != *" $name "* ]]; then
      echo "run_all.sh: no benchmark '$name'; the benchmarks are ${all[*]}" >&2
      exit 2
    fi
  done
fi
for name in "${!extra[@]}"; do
  if [[ " ${all[*]} " != *" $name "* ]]; then
    echo "run_all.sh: --${name//_/-}-args names no benchmark; the benchmarks are ${all[*]}" >&2
    exit 2
  fi
done

build=${DDPRUN_BUILD_DIR:-$repo/build}
results=$repo/benchmarks/results
if ((setup)); then
  bash "$repo/scripts/setup.sh" || { echo "run_all.sh: scripts/setup.sh failed" >&2; exit 1; }
fi
python=$(sed -n 's/^DDPRUN_PYTHON:FILEPATH=//p' "$build/CMakeCache.txt" 2>/dev/null)
python=${python:-$HOME/.cache/ddprun/venv-torch-2.15.0-py3.11/bin/python}
if [[ ! -x $python ]]; then
  echo "run_all.sh: no Python with torch at '$python'; run scripts/setup.sh (or drop --no-setup)" >&2
  exit 1
fi
torchrun=$(dirname "$python")/torchrun

# The repeat flag of each driver, or nothing.
repeat_args() {
  [[ -z $repeats ]] && return
  case $1 in
    ddp|metrics_cost|launch|checkpoint) echo "--repeats $repeats" ;;
    elastic) echo "--runs $repeats" ;;
  esac
}

# Why a benchmark cannot run here (empty: it can).
cannot_run() {
  case $1 in
    elastic)
      [[ $(id -u) == 0 ]] || { echo "needs root (network namespaces)"; return; }
      command -v ip >/dev/null || { echo "needs iproute2's ip (network namespaces)"; return; }
      local ns=ddprun-run-all-probe-$$
      if ! ip netns add "$ns" 2>/dev/null; then echo "cannot create a network namespace here"; return; fi
      ip netns delete "$ns" ;;
    faults)
      # Runs without root too: its tmpfs and network-namespace rows then mark themselves skipped.
      ;;
  esac
}

failed=() skipped=() done_=()
started=$(date +%s)
for name in "${names[@]}"; do
  why=$(cannot_run "$name")
  if [[ -n $why ]]; then
    echo "== $name: skipped: $why"
    skipped+=("$name ($why)")
    continue
  fi
  # shellcheck disable=SC2046  # the repeat and extra arguments split on spaces on purpose
  set -- $(repeat_args "$name") ${extra[$name]:-}
  echo "== $name: $(date -u '+%H:%M:%S UTC') ${*:+(arguments: $*)}"
  t0=$(date +%s)
  case $name in
    ddp)
      "$python" "$repo/benchmarks/ddp/run_ddp_benchmark.py" --ddprun "$build/launcher/ddprun" \
        --ddp-bench "$build/benchmarks/ddp_bench" --torchrun "$torchrun" --out "$results" "$@" ;;
    metrics_cost)
      "$python" "$repo/benchmarks/ddp/run_metrics_cost.py" --ddprun "$build/launcher/ddprun" \
        --ddp-bench "$build/benchmarks/ddp_bench" --metrics-bench "$build/benchmarks/metrics_bench" \
        --out "$results" "$@" ;;
    launch)
      "$python" "$repo/benchmarks/launch/run_launch_benchmark.py" --ddprun "$build/launcher/ddprun" \
        --launch-worker "$build/benchmarks/launch_worker" --torchrun "$torchrun" --out "$results" "$@" ;;
    checkpoint)
      "$python" "$repo/benchmarks/checkpoint/run_checkpoint_benchmark.py" --ddprun "$build/launcher/ddprun" \
        --checkpoint-bench "$build/benchmarks/checkpoint_bench" --ddptrain "$build/examples/ddptrain" \
        --out "$results" "$@" ;;
    elastic)
      "$python" "$repo/benchmarks/elastic/run_elastic_benchmark.py" "$@" \
        "$build/launcher/ddprun" "$build/examples/ddptrain" ;;
    faults)
      "$python" "$repo/benchmarks/faults/run_fault_matrix.py" --build "$build" \
        --out "$results/faults.md" "$@" ;;
  esac
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  if ((rc == 0)); then done_+=("$name"); else failed+=("$name (exit $rc)"); fi
done

echo
echo "run_all.sh: $(( ($(date +%s) - started) / 60 )) min; the report is in $results/:"
for name in "${done_[@]}" "${failed[@]%% *}"; do
  [[ -n $name && -f $results/$name.md ]] && echo "  $results/$name.md (+ .json, .png)"
done
((${#skipped[@]})) && printf '  skipped: %s\n' "${skipped[@]}"
if ((${#failed[@]})); then
  printf '  failed: %s\n' "${failed[@]}"
  exit 1
fi
exit 0
