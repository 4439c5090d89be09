#!/usr/bin/env bash
# Builds an image (docker/Dockerfile.cpu or .cuda) for real, without a Docker engine and
# without a registry, then trains with 2 ranks inside it:
#   1. buildah and debootstrap from Debian (installed when missing);
#   2. the base image: no registry image can be pulled here, so a debootstrapped Debian
#      bookworm is imported under the names the Dockerfile uses (debian:bookworm and
#      debian:bookworm-slim), once; the root file system is cached as a tarball;
#   3. `buildah bud --isolation chroot` with vfs storage (no overlay, no daemon, works in
#      a container), the build context and .dockerignore of docker/build.sh;
#   4. `buildah run` in the result: the install layout the manifests use exists, the
#      binaries run as the image's user, `ldd` finds every library of ddprun, ddptrain and
#      the runtime inside the image, `ddptrain --version` names the build's CUDA and NCCL
#      (cuda), and `ddprun --standalone --nproc-per-node 2` trains ddptrain on the image's
#      sample data (Gloo on CPU: there is no GPU here) and writes its checkpoint.
# Prints the time of each step. Storage lives in $DDPRUN_BUILDAH_ROOT (default
# /var/lib/ddprun-buildah); remove it to start from nothing.
#
# Usage: docker/buildah_build.sh [cpu|cuda] [IMAGE [TAG]]  (default: cpu, localhost/ddprun-FLAVOR:buildah)
# Needs root (debootstrap, chroot isolation). The CUDA image downloads ~4 GB of wheels and
# compiles ddprun against them: 72 min on 2 cores shared with two other image builds
# (ctest label cuda-image); the image is 4.4 GB.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
flavor=cpu
if [[ ${1:-} == cpu || ${1:-} == cuda ]]; then flavor=$1; shift; fi
image=${1:-localhost/ddprun-$flavor}
tag=${2:-buildah}
root=${DDPRUN_BUILDAH_ROOT:-/var/lib/ddprun-buildah}
cache=${DDPRUN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ddprun}/buildah
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
steps=${DDPRUN_BUILDAH_STEPS:-4}   # run up to this step (1-4)

log() { printf '[buildah_build] %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
now() { date +%s; }
[[ $(id -u) -eq 0 ]] || fail "needs root (debootstrap and buildah --isolation chroot)"
t_start=$(now)

# --- 1. tools -------------------------------------------------------------------------------
missing=()
for p in buildah debootstrap; do command -v "$p" >/dev/null || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
bah() { buildah --root "$root/storage" --runroot "$root/run" --storage-driver vfs "$@"; }
log "$(buildah --version)"

# --- 2. the base image -------------------------------------------------------------------------
t0=$(now)
base=docker.io/library/debian:$suite
if ! bah inspect --type image "$base" >/dev/null 2>&1; then
  tarball=$cache/debian-$suite-minbase.tar
  if [[ ! -s $tarball ]]; then
    log "debootstrap $suite from $mirror"
    rootfs=$(mktemp -d "$root.rootfs.XXXXXX")
    mkdir -p "$cache"
    debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/debootstrap.log"; fail "debootstrap failed"; }
    # The security and updates suites, as the official image has them.
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
      "$mirror" "$suite" "$mirror" "$suite" "$suite" >"$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "importing $tarball as $base and $base-slim"
  ctr=$(bah from scratch)
  bah add "$ctr" "$tarball" / >/dev/null
  bah config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  bah commit --quiet --rm "$ctr" "$base" >/dev/null
  bah tag "$base" "$base-slim"
fi
t_base=$(($(now) - t0))
log "base image ready in ${t_base} s"
((steps >= 3)) || exit 0

# --- 3. the image ----------------------------------------------------------------------------------
t0=$(now)
log "building $image:$tag from docker/Dockerfile.$flavor (log: $root/build-$flavor.log)"
mkdir -p "$root"
# The build stage downloads the torch wheel over HTTPS. Where the network passes through a
# TLS-intercepting proxy, the host's CA bundle knows its CA and a Debian base does not:
# the host's bundle is mounted read-only for the RUN steps only (with a pip.conf that
# points pip at it); nothing of it ends up in the image.
mounts=()
host_ca=${DDPRUN_HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [[ -s $host_ca ]]; then
  printf '[global]\ncert = /run/ddprun-host-ca.crt\n' >"$root/pip.conf"
  mounts=(--volume "$host_ca:/run/ddprun-host-ca.crt:ro" --volume "$root/pip.conf:/etc/pip.conf:ro")
fi
build() {
  bah bud --isolation chroot --pull=never --layers=false "${mounts[@]}" \
    --ignorefile "$repo/docker/.dockerignore" -f "$repo/docker/Dockerfile.$flavor" \
    -t "$image:$tag" "$repo" >"$root/build-$flavor.log" 2>&1
}
# buildah 1.28 re-executes itself from a sealed memfd copy for each RUN; sealing can fail
# with EBUSY at random ("Close_Fd sealing memfd copy: Device or resource busy"), which
# says nothing about the Dockerfile. That failure alone is retried, once.
if ! build; then
  if grep -q 'sealing memfd copy' "$root/build-$flavor.log"; then
    log "buildah's transient memfd sealing failure; building again"
    cp "$root/build-$flavor.log" "$root/build-$flavor.1.log"
    build || { tail -40 "$root/build-$flavor.log"; fail "buildah bud failed"; }
  else
    tail -40 "$root/build-$flavor.log"
    fail "buildah bud failed"
  fi
fi
t_build=$(($(now) - t0))
log "image built in ${t_build} s"
bah images "$image:$tag"
((steps >= 4)) || exit 0

# --- 4. run inside the image -----------------------------------------------------------------------
t0=$(now)
ctr=$(bah from --pull=never "$image:$tag")
trap 'bah rm "$ctr" >/dev/null 2>&1 || true' EXIT
run() { bah run --isolation chroot "$ctr" -- "$@"; }
# The layout the manifests use (tests/k8s/image_layout_test.py checks the same paths
# statically), owned and runnable by the image's user.
run sh -c 'id -u; test -x /opt/ddprun/bin/ddprun && test -x /opt/ddprun/bin/ddptrain \
  && test -f /etc/ddprun/ddptrain.yaml && test -d /data/fashion-mnist && test -w /checkpoints \
  && test -f /home/ddprun/.sshd_config && command -v mpirun && command -v /usr/sbin/sshd' \
  || fail "the image's layout is incomplete"
[[ $(run id -u) == 1000 ]] || fail "the image does not run as uid 1000"
# Every library the binaries need is inside the image (libcuda.so.1 is the node's: the
# NVIDIA container toolkit mounts it, so nothing here may need it at load time).
# shellcheck disable=SC2016
missing_libs=$(run sh -c 'for f in /opt/ddprun/bin/* /opt/ddprun/lib/*.so; do ldd "$f" | sed -n "s|^|$f: |p"; done' \
  | grep 'not found' || true)
[[ -z $missing_libs ]] || { echo "$missing_libs"; fail "libraries missing in the image"; }
version=$(run /opt/ddprun/bin/ddptrain --version)
echo "$version"
if [[ $flavor == cuda ]]; then
  grep -q 'CUDA runtime [0-9]' <<<"$version" && grep -q 'NCCL [0-9]' <<<"$version" \
    || fail "ddptrain --version names no CUDA and NCCL: $version"
fi
run /opt/ddprun/bin/ddprun --version
log "training: ddprun --standalone --nproc-per-node 2 -- ddptrain (30 steps)"
run /opt/ddprun/bin/ddprun --standalone --nproc-per-node 2 -- \
  /opt/ddprun/bin/ddptrain --config /etc/ddprun/ddptrain.yaml --max-steps 30 --log-every 10 \
  --eval-batch-size 2000 --checkpoint-dir /checkpoints/buildah-test --threads 1
listing=$(run ls /checkpoints/buildah-test)
echo "$listing"
grep -qx 'checkpoint-00000030.pt' <<<"$listing" || fail "no checkpoint of step 30 in /checkpoints/buildah-test"
grep -qx 'checkpoint-00000030.pt.json' <<<"$listing" || fail "the checkpoint has no manifest"
t_run=$(($(now) - t0))
log "ran in ${t_run} s"
bah rm "$ctr" >/dev/null 2>&1 || true
bah rmi --prune >/dev/null 2>&1 || true   # the image this tag named before, now dangling
size=$(bah images --format '{{.Size}}' "$image:$tag" 2>/dev/null || echo unknown)
log "PASS ($flavor): base ${t_base} s, build ${t_build} s, run ${t_run} s, total $(($(now) - t_start)) s, image ${size}"

