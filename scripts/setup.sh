#!/usr/bin/env bash
# Brings a machine from nothing to a configured and built ddprun, idempotently:
#   1. Debian packages the build and the tests use (only the missing ones),
#   2. a Python venv holding the pinned torch wheel (LibTorch comes from it), kept
#      outside the clone so fresh clones and CI reuse it,
#   3. CMake configure + build in ./build with ccache (cache also outside the clone).
# Quick when everything is already there. Sourced settings (all overridable):
#   DDPRUN_CACHE_DIR  per-user cache root   (default ${XDG_CACHE_HOME:-~/.cache}/ddprun)
#   DDPRUN_VENV       the venv              (default $DDPRUN_CACHE_DIR/venv-torch-<pin>-py<ver>)
#   DDPRUN_BUILD_DIR  the build directory   (default <repo>/build)
#   DDPRUN_CMAKE_ARGS extra CMake arguments (e.g. -DDDPRUN_WITH_CUDA=OFF)
#   DDPRUN_TORCH_PYTHON  build against this interpreter's torch (2.11 or newer, e.g. a GPU
#                     host's own) instead of the pinned venv, which is then not made; use a
#                     build directory of its own (DDPRUN_BUILD_DIR)
# Usage: setup.sh [--deps-only | --targets T...]
#   --deps-only    steps 1 and 2, no build
#   --targets T..  build only these CMake targets (scripts/run.sh: ddprun ddptrain);
#                  default: everything, tests and benchmarks included
set -euo pipefail
deps_only=0
targets=()
if [[ "${1:-}" == "--deps-only" ]]; then
  deps_only=1
elif [[ "${1:-}" == "--targets" ]]; then
  shift
  targets=("$@")
  ((${#targets[@]})) || { echo "setup: --targets needs at least one target" >&2; exit 2; }
elif [[ -n "${1:-}" ]]; then
  echo "setup: unknown argument '$1'; expected --deps-only or --targets T..." >&2
  exit 2
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
requirements="$repo/scripts/requirements.txt"
torch_pin=$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' "$requirements")
[[ -n "$torch_pin" ]] || { echo "setup: no 'torch==X.Y.Z' line in $requirements" >&2; exit 2; }

python=${DDPRUN_PYTHON:-python3}
py_ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
cache_dir=${DDPRUN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ddprun}
venv=${DDPRUN_VENV:-$cache_dir/venv-torch-$torch_pin-py$py_ver}
build_dir=${DDPRUN_BUILD_DIR:-$repo/build}

log() { printf '[setup] %s\n' "$*" >&2; }
now() { date +%s; }

# --- 1. Debian packages ------------------------------------------------------------
apt_packages=(
  build-essential cmake ninja-build ccache pkg-config clang-format
  libgtest-dev libgmock-dev libbenchmark-dev
  openmpi-bin libopenmpi-dev
  libgloo-dev libcxxopts-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libyaml-cpp-dev zlib1g-dev
  dataset-fashion-mnist
  python3-sklearn                       # data/ tests: sklearn's iris, wine, breast cancer, digits CSVs
  golang-github-andybalholm-brotli-dev  # data/ tests: a Gutenberg text (Newton's Opticks, 567 KB)
  iproute2 procps
  elfutils                              # eu-stack: the stacks of a hung rank (runtime/health)
  libcpp-httplib-dev                    # /metrics, /healthz, /readyz; TrainJob progress (HTTPS)
  prometheus                            # tests: a real Prometheus scrapes a run; promtool
  tmux                                  # tests: the progress bar as a terminal shows it
  python3-venv
  buildah debootstrap                   # tests/k8s: the CPU image built for real (docker/buildah_build.sh)
  openssh-server openssh-client         # tests/k8s: the MPIJob over SSH (sshd as ddprun on 2222, no system sshd)
)
# tests/k8s renders the kustomization with `kubectl kustomize`: any kubectl will do (this
# machine image has one); Debian's kubernetes-client is the fallback.
command -v kubectl >/dev/null || apt_packages+=(kubernetes-client)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  t0=$(now)
  log "installing Debian packages: ${missing[*]}"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # openssh-server's postinst starts a system sshd on port 22 where an init system runs
  # (deb-systemd-invoke under systemd, invoke-rc.d under SysV init; in a container without
  # either, invoke-rc.d finds no runlevel and starts nothing) and enables it at boot. The
  # tests run their own sshd, as the user ddprun on port 2222 in network namespaces, and
  # want none on this machine: a policy-rc.d answering 101 ("action forbidden", which both
  # honour) stops the start. It is put there for this install only, and only if the machine
  # has none (one already there, as in container images, is left as it is); it holds back
  # the other services of the same install too (prometheus). Under systemd the unit is
  # disabled as well.
  policy=""
  if [[ " ${missing[*]} " == *" openssh-server "* && ! -e /usr/sbin/policy-rc.d ]]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# setup.sh: no services started while it installs openssh-server\nexit 101\n' |
      $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
  fi
  rc=0
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  [[ -z "$policy" ]] || $sudo rm -f "$policy"
  ((rc == 0)) || exit "$rc"
  if [[ " ${missing[*]} " == *" openssh-server "* && -d /run/systemd/system ]]; then
    $sudo systemctl disable --now --quiet ssh.service ssh.socket 2>/dev/null || true
  fi
  log "apt took $(($(now) - t0)) s"
fi

# --- 2. The venv with the pinned torch ----------------------------------------------
# The stamp records the requirements it was built from: a changed pin or an added test
# dependency re-runs pip; an unchanged one costs nothing. With DDPRUN_TORCH_PYTHON the
# user's interpreter stands in for the venv's (CMakeLists.txt checks its torch version).
torch_python=$venv/bin/python
if [[ -n "${DDPRUN_TORCH_PYTHON:-}" ]]; then
  torch_python=$DDPRUN_TORCH_PYTHON
  "$torch_python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is None)' ||
    { echo "setup: DDPRUN_TORCH_PYTHON=$torch_python has no torch package; expected a Python with torch 2.11 or newer" >&2; exit 2; }
  log "using $torch_python's torch (DDPRUN_TORCH_PYTHON), not the pinned venv"
fi
stamp="$venv/.ddprun-requirements"
if [[ -z "${DDPRUN_TORCH_PYTHON:-}" ]] && ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
  t0=$(now)
  log "creating/updating venv $venv (torch $torch_pin)"
  mkdir -p "$(dirname "$venv")"
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
  log "pip took $(($(now) - t0)) s"
fi

# --- 3. Configure and build ---------------------------------------------------------
((deps_only)) && exit 0
configured=$(sed -n 's/^DDPRUN_PYTHON:FILEPATH=//p' "$build_dir/CMakeCache.txt" 2>/dev/null || true)
if [[ -n "$configured" && "$configured" != "$torch_python" ]]; then
  echo "setup: $build_dir was configured with $configured's torch, not $torch_python's;" \
    "set DDPRUN_BUILD_DIR to another directory (or remove $build_dir)" >&2
  exit 2
fi
if [[ ! -f "$build_dir/build.ninja" ]]; then
  t0=$(now)
  log "configuring $build_dir"
  # shellcheck disable=SC2086
  cmake -S "$repo" -B "$build_dir" -G Ninja \
    -DCMAKE_BUILD_TYPE=${DDPRUN_BUILD_TYPE:-RelWithDebInfo} \
    -DDDPRUN_PYTHON="$torch_python" \
    -DDDPRUN_CCACHE_DIR="${CCACHE_DIR:-$cache_dir/ccache}" \
    ${DDPRUN_CMAKE_ARGS:-} >/dev/null
  log "configure took $(($(now) - t0)) s"
fi
t0=$(now)
target_args=()
((${#targets[@]})) && target_args=(--target "${targets[@]}")
cmake --build "$build_dir" "${target_args[@]}" -- -j"$(nproc)"
log "build (${targets[*]:-all targets}) took $(($(now) - t0)) s"
