#!/usr/bin/env bash
# A user's own program in an image FROM ours (examples/own_image/), built for real with
# buildah as docker/buildah_build.sh builds the CPU image (vfs storage, chroot isolation,
# no registry: --pull=never on the debootstrapped base it imports):
#   1. the runtime image, by docker/buildah_build.sh (steps 1-3: tools, base, build);
#   2. the sdk stage of docker/Dockerfile.cpu (what `docker/build.sh cpu-sdk` builds);
#   3. examples/own_image/Dockerfile on top of both, with examples/custom_loop as the
#      user's project directory (the build context);
#   4. in the user's image, as its user (uid 1000): `ddprun --standalone --nproc-per-node 2
#      -- /opt/app/bin/custom_loop --trainer` on the data set the image carries, writing
#      its checkpoints under /checkpoints/<job name>; run again, it finds the run complete.
# Prints the time of each step and the images' sizes. Needs root and the network (Debian's
# mirror, PyPI) unless the base image is already in $DDPRUN_BUILDAH_ROOT. Slow: ddprun is
# compiled twice, for the runtime image and for the sdk (about 6 min each on 2 idle cores,
# as k8s.image_build), then custom_loop (2.5 min), and the run takes 40 s. On 2 cores
# shared with a CUDA image build and other tests it took 49 min (runtime image), 40 min
# (sdk, partly at the same time), 146 s and 42 s. Label user-image, which scripts/test.sh
# leaves out by default. Sizes (buildah, vfs): runtime and user's image 811 MB each, sdk 3.85 GB.
#
# Usage: tests/k8s/own_image_test.sh [REPO]
# DDPRUN_OWN_IMAGE_REUSE=1 keeps the runtime and sdk images of an earlier run (tag
# own-image-test) where they exist: for working on the example, not for testing ddprun.
# The images are removed after a pass and kept after a failure.
set -euo pipefail

main() {
  local repo=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
  local root=${DDPRUN_BUILDAH_ROOT:-/var/lib/ddprun-buildah}
  local tag=own-image-test
  local runtime=localhost/ddprun-cpu:$tag sdk=localhost/ddprun-cpu-sdk:$tag
  local app=localhost/ddprun-own-image:$tag
  local t_start t0 t_runtime t_sdk t_app t_run
  t_start=$(now)

  # --- 1. the runtime image: buildah_build.sh's steps 1-3 -------------------------------------
  t0=$(now)
  if ! reused "$runtime"; then
    DDPRUN_BUILDAH_STEPS=3 "$repo/docker/buildah_build.sh" "${runtime%:*}" "$tag"
  fi
  t_runtime=$(($(now) - t0))

  # --- 2. the sdk stage and 3. the user's image -------------------------------------------------
  # The host's CA bundle for pip, mounted for RUN steps only, as buildah_build.sh does.
  mounts=()
  local host_ca=${DDPRUN_HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
  if [[ -s $host_ca ]]; then
    printf '[global]\ncert = /run/ddprun-host-ca.crt\n' >"$root/pip.conf"
    mounts=(--volume "$host_ca:/run/ddprun-host-ca.crt:ro" --volume "$root/pip.conf:/etc/pip.conf:ro")
  fi
  t0=$(now)
  if ! reused "$sdk"; then
    log "building $sdk (docker/Dockerfile.cpu --target sdk; log: $root/build-sdk.log)"
    build "$root/build-sdk.log" --ignorefile "$repo/docker/.dockerignore" -f "$repo/docker/Dockerfile.cpu" \
      --target sdk -t "$sdk" "$repo"
  fi
  t_sdk=$(($(now) - t0))
  log "sdk built in ${t_sdk} s"

  t0=$(now)
  log "building $app (examples/own_image/Dockerfile, context examples/custom_loop; log: $root/build-own-image.log)"
  build "$root/build-own-image.log" -f "$repo/examples/own_image/Dockerfile" \
    --build-arg "DDPRUN_SDK=$sdk" --build-arg "DDPRUN_IMAGE=$runtime" -t "$app" "$repo/examples/custom_loop"
  t_app=$(($(now) - t0))
  log "the user's image built in ${t_app} s"

  # --- 4. run the user's program in the user's image --------------------------------------------
  t0=$(now)
  ctr=$(bah from --pull=never "$app")
  trap 'bah rm "$ctr" >/dev/null 2>&1 || true' EXIT
  run() { bah run --isolation chroot "$ctr" -- "$@"; }
  [[ $(run id -u) == 1000 ]] || fail "the user's image does not run as uid 1000"
  run sh -c '! ldd /opt/app/bin/custom_loop | grep -E "not found|/opt/venv"' \
    || fail "custom_loop does not find its libraries in the runtime image"
  run ls -l /data/custom_loop
  local job=own-image-test out
  for attempt in 1 2; do
    log "training (run $attempt): ddprun --standalone --nproc-per-node 2 -- /opt/app/bin/custom_loop --trainer"
    out=$(run /opt/ddprun/bin/ddprun --standalone --nproc-per-node 2 -- /opt/app/bin/custom_loop \
            --trainer --data /data/custom_loop --checkpoint-dir "/checkpoints/$job" 2>&1) \
      || { echo "$out"; fail "custom_loop under ddprun failed (run $attempt)"; }
    echo "$out"
  done
  grep -q 'custom_loop --trainer: already complete at step 60' <<<"$out" \
    || fail "the second run did not find the first run's completion marker"
  local listing
  listing=$(run ls -n "/checkpoints/$job")
  echo "$listing"
  for file in checkpoint-00000060.pt run-journal.jsonl run-complete.json; do
    awk -v f="$file" '$NF == f && $3 == 1000 { found = 1 } END { exit !found }' <<<"$listing" \
      || fail "no $file owned by uid 1000 in /checkpoints/$job"
  done
  t_run=$(($(now) - t0))
  bah rm "$ctr" >/dev/null 2>&1 || true
  trap - EXIT

  bah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -F ":$tag " || true
  bah rmi "$app" "$sdk" "$runtime" >/dev/null 2>&1 || true
  bah rmi --prune >/dev/null 2>&1 || true
  log "PASS: runtime image ${t_runtime} s, sdk ${t_sdk} s, user's image ${t_app} s, run ${t_run} s," \
      "total $(($(now) - t_start)) s"
}

log() { printf '[own_image_test] %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
now() { date +%s; }
reused() {
  [[ ${DDPRUN_OWN_IMAGE_REUSE:-0} == 1 ]] && bah inspect --type image "$1" >/dev/null 2>&1 \
    && log "reusing $1 (DDPRUN_OWN_IMAGE_REUSE=1)"
}
bah() { buildah --root "$root/storage" --runroot "$root/run" --storage-driver vfs "$@"; }
# buildah bud as buildah_build.sh runs it, its transient memfd sealing failure retried once.
build() {
  local logfile=$1; shift
  local attempt
  for attempt in 1 2; do
    if bah bud --isolation chroot --pull=never --layers=false "${mounts[@]}" "$@" >"$logfile" 2>&1; then
      return 0
    fi
    if [[ $attempt == 1 ]] && grep -q 'sealing memfd copy' "$logfile"; then
      log "buildah's transient memfd sealing failure; building again"
      continue
    fi
    tail -40 "$logfile"
    fail "buildah bud $* failed"
  done
}

[[ $(id -u) -eq 0 ]] || { echo "own_image_test: needs root (buildah --isolation chroot)" >&2; exit 1; }
root=${DDPRUN_BUILDAH_ROOT:-/var/lib/ddprun-buildah}
main "$@"
exit
