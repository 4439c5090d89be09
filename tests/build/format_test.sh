#!/usr/bin/env bash
# Every C++ file the repository tracks is formatted as the root .clang-format says; a file
# that is not fails the test with the diff to apply (`clang-format -i FILE` fixes it).
# Usage: format_test.sh <source dir>
set -euo pipefail
src=$1
cd "$src"
command -v clang-format >/dev/null || { echo "FAIL: clang-format not found (scripts/setup.sh installs it)" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.hpp' '*.cu' '*.cuh')
((${#files[@]})) || { echo "FAIL: no C++ files found under $src (not a git checkout?)" >&2; exit 1; }
bad=()
for f in "${files[@]}"; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    bad+=("$f")
    clang-format "$f" | diff -u "$f" - | head -20 || true
  fi
done
if ((${#bad[@]})); then
  echo "FAIL: ${#bad[@]} of ${#files[@]} files are not formatted ($(clang-format --version)):" >&2
  printf '  %s\n' "${bad[@]}" >&2
  echo "Fix: clang-format -i ${bad[*]}" >&2
  exit 1
fi
echo "PASS: ${#files[@]} files formatted ($(clang-format --version))"
