#!/usr/bin/env bash
# Builds a ddprun image from the repository root as the build context.
#
# Usage: docker/build.sh FLAVOR IMAGE TAG [--push]
#   FLAVOR  cuda (docker/Dockerfile.cuda: NCCL, for GPU nodes), cpu (docker/Dockerfile.cpu)
#           or cpu-sdk (Dockerfile.cpu's sdk stage: the CMake package, to build one's own
#           program against; examples/own_image/README.md)
#   IMAGE   e.g. registry.example.com/ml/ddprun-cuda
#   TAG     e.g. 0.1.0
#   --push  push IMAGE:TAG after the build
# The engine is docker, or $CONTAINER_ENGINE (podman, buildah). The torch version comes
# from scripts/requirements.txt inside the Dockerfile; it is also recorded as a label.
set -euo pipefail
usage() { sed -n '2,12p' "$0" >&2; exit 2; }
[[ $# -ge 3 && $# -le 4 ]] || usage
flavor=$1 image=$2 tag=$3 push=${4:-}
case $flavor in
  cuda|cpu) dockerfile=Dockerfile.$flavor target=() ;;
  cpu-sdk) dockerfile=Dockerfile.cpu target=(--target sdk) ;;
  *) echo "build.sh: FLAVOR must be cuda, cpu or cpu-sdk, not '$flavor'" >&2; usage ;;
esac
[[ -z $push || $push == --push ]] || usage
[[ $image =~ ^([a-z0-9.-]+(:[0-9]+)?/)?[a-z0-9._/-]+$ ]] \
  || { echo "build.sh: '$image' is not an image name (lower case, no tag)" >&2; exit 2; }
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || { echo "build.sh: '$tag' is not a valid tag" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
engine=${CONTAINER_ENGINE:-docker}
torch=$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' "$repo/scripts/requirements.txt")
[[ -n $torch ]] || { echo "build.sh: no torch==X.Y.Z line in scripts/requirements.txt" >&2; exit 2; }
revision=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
labels=(--label "org.opencontainers.image.title=ddprun-$flavor"
        --label "org.opencontainers.image.version=$tag"
        --label "org.opencontainers.image.revision=$revision"
        --label "io.github.ddprun.torch=$torch")
case $engine in
  docker) args=(build) ;;                                   # reads docker/Dockerfile.<flavor>.dockerignore
  podman) args=(build --ignorefile "$repo/docker/.dockerignore") ;;
  buildah) args=(bud --ignorefile "$repo/docker/.dockerignore") ;;
  *) echo "build.sh: unknown CONTAINER_ENGINE '$engine' (docker, podman or buildah)" >&2; exit 2 ;;
esac
set -x
"$engine" "${args[@]}" -f "$repo/docker/$dockerfile" "${target[@]}" "${labels[@]}" -t "$image:$tag" "$repo"
if [[ $push == --push ]]; then
  "$engine" push "$image:$tag"
fi
