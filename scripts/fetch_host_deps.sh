#!/usr/bin/env bash
# The Debian packages a host without registries (the GPU host of scripts/device_check.sh:
# its own Python, torch, CMake, ninja and nvcc, none of ours) needs to configure and build
# ddprun, downloaded here as .deb files and unpacked into a prefix (dpkg-deb -x, never
# into /), and Fashion-MNIST for the accuracy checks. They live in .host-deps/ (ignored by
# git): debs/ and data/ travel with the device check (~35 MB; the prefix is made again
# there with --unpack, which needs no registry). The host's build points CMake at the
# prefix (scripts/device_check.sh does):
#   -DCMAKE_PREFIX_PATH=$prefix/usr -DPKG_CONFIG_EXECUTABLE=$prefix/usr/bin/pkgconf
#   PKG_CONFIG_SYSROOT_DIR=$prefix (the .pc files say prefix=/usr)
#   LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu (pkgconf's library, brotli)
# Open MPI is not among them: the host builds with -DDDPRUN_WITH_MPI=OFF.
# Usage: fetch_host_deps.sh [--list | --unpack]
#   --list    print the packages and exit
#   --unpack  only unpack the .deb files already in debs/ (on the host)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${DDPRUN_HOST_DEPS:-$repo/.host-deps}

# What CMakeLists.txt find_package()s, and the shared libraries those link (the runtime
# packages: a host without them could build but not run). This machine is Debian 12;
# its libraries need glibc 2.36 and GCC 12's libstdc++, older than the host's (Ubuntu 24.04).
packages=(
  libspdlog-dev libspdlog1.10 libfmt-dev libfmt9      # spdlog (compiled, on fmt 9)
  libcxxopts-dev nlohmann-json3-dev                   # headers only
  libyaml-cpp-dev libyaml-cpp0.7
  libgloo-dev                                         # headers only: Note [Gloo headers]
  zlib1g-dev zlib1g                                   # zlib1g: libz.so's target
  libcpp-httplib-dev libcpp-httplib0.11 libbrotli1    # /metrics; found with pkg-config
  pkgconf pkgconf-bin libpkgconf3                     # in case the host has no pkg-config
  libgtest-dev libgmock-dev                           # the gpu tests
  libbenchmark-dev libbenchmark1debian                # benchmarks/ (metrics_bench)
)
fashion=/usr/share/datasets/fashion-mnist  # Debian's dataset-fashion-mnist (setup.sh)

# Unpacks every .deb of debs/ into prefix/ and points the links that name an absolute path
# (libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) at the prefix's copy.
unpack() {
  local prefix=$dest/prefix link target
  compgen -G "$dest/debs/*.deb" >/dev/null ||
    { echo "fetch_host_deps: no .deb files in $dest/debs; run scripts/fetch_host_deps.sh here first" >&2; exit 1; }
  rm -rf "$prefix"
  mkdir -p "$prefix"
  for deb in "$dest"/debs/*.deb; do dpkg-deb -x "$deb" "$prefix"; done
  while IFS= read -r link; do
    target=$(readlink "$link")
    [[ $target == /* && -e $prefix$target ]] && ln -sfn "$prefix$target" "$link"
  done < <(find "$prefix" -type l)
  # cpp-httplib.pc requires openssl and brotli .pc files for static links only, which a host
  # without their -dev packages lacks and which pkg-config still insists on: the shared
  # library, all we link, names its libraries itself.
  sed -i '/^Requires.private:/d' "$prefix/usr/lib/x86_64-linux-gnu/pkgconfig/cpp-httplib.pc"
  rm -rf "$prefix/usr/share/doc" "$prefix/usr/share/man" "$prefix/usr/share/lintian"
  echo "$(ls "$dest"/debs/*.deb | wc -l) packages unpacked into $prefix ($(du -sh "$prefix" | cut -f1))"
}

case "${1:-}" in
  --list) printf '%s\n' "${packages[@]}"; exit 0 ;;
  --unpack) unpack; exit 0 ;;
  "") ;;
  *) echo "fetch_host_deps: unknown argument '$1'; expected --list, --unpack or nothing" >&2; exit 2 ;;
esac

mkdir -p "$dest/debs"
cd "$dest/debs"
missing=()
for p in "${packages[@]}"; do
  compgen -G "${p}_*.deb" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "downloading: ${missing[*]}"
  apt-get download "${missing[@]}" ||
    { echo "fetch_host_deps: apt-get download failed; run 'apt-get update' first" >&2; exit 1; }
fi
unpack
if [[ ! -d $dest/data/fashion-mnist ]]; then
  [[ -d $fashion ]] || { echo "fetch_host_deps: no $fashion; run scripts/setup.sh (dataset-fashion-mnist)" >&2; exit 1; }
  mkdir -p "$dest/data"
  cp -r "$fashion" "$dest/data/fashion-mnist"
fi
echo "travels: $(du -sh "$dest/debs" | cut -f1) of .deb in $dest/debs," \
  "$(du -sh "$dest/data" | cut -f1) of data in $dest/data"
