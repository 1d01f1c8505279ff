#!/usr/bin/env bash
# Builds other projects' binaries (the peers ironlb is tested with, or against) from the Go module
# proxy, into the cache dev/kube/build.sh uses, keyed by name, version and a hash of the recipe and
# of this script. A warm cache makes this a no-op. Prints the binary directory as its last line.
#   dev/peers/build.sh NAME          build NAME if needed, print the directory
#   dev/peers/build.sh NAME --dir    print the directory only (exit 1 if not built)
#   dev/peers/build.sh --list        the peers there are recipes for
#
# A peer is one file, dev/peers/NAME.peer (bash), naming a Go module, its version, the h1: hash of
# its zip as go.sum records it, the packages to build and the binaries they make, and extra
# ldflags. The module is built as the main module, with its own go.mod and go.sum (replace
# directives and all), exactly as its release is: the pinned hash pins those files too, so the
# cache key covers every input.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage() { echo "usage: dev/peers/build.sh NAME [--dir] | --list" >&2; exit 2; }
[ $# -ge 1 ] || usage
if [ "$1" = "--list" ]; then
  for f in "$here"/*.peer; do basename "$f" .peer; done
  exit 0
fi
name=$1
recipe="$here/$name.peer"
[ -f "$recipe" ] || { echo "build.sh: no peer $name (dev/peers/$name.peer); known: $("$0" --list | xargs)" >&2; exit 2; }
module= version= sum= ldflags= packages=() binaries=()
# shellcheck source=/dev/null
source "$recipe"
for v in module version sum; do
  [ -n "${!v}" ] || { echo "build.sh: $recipe sets no $v" >&2; exit 2; }
done
[ ${#packages[@]} -gt 0 ] && [ ${#binaries[@]} -gt 0 ] \
  || { echo "build.sh: $recipe names no packages or binaries" >&2; exit 2; }
hash=$(cat "$recipe" "$here/build.sh" | sha256sum | cut -c1-12)
cache=${IRONLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ironlb}
dir="$cache/peers/$name-$version-$hash"
built() { for b in "${binaries[@]}"; do [ -x "$dir/$b" ] || return 1; done; }
if [ "${2:-}" = "--dir" ]; then built && echo "$dir" && exit 0; exit 1; fi
[ $# -eq 1 ] || usage
if built; then echo "$dir"; exit 0; fi
command -v go >/dev/null || { echo "build.sh: Go is required (https://go.dev/dl)" >&2; exit 1; }
# Concurrent runs (test sessions of several checkouts) build once: the others wait, then reuse it.
mkdir -p "$cache/peers"
exec 9>"$cache/peers/$name.lock"
flock 9
if built; then echo "$dir"; exit 0; fi
start=$(date +%s)
rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/src"
trap 'rm -rf "$dir.tmp"' EXIT
# Outside any module, so that nothing here (or a go.work above) takes part in the download.
if ! info=$(cd "$dir.tmp" && GOFLAGS= go mod download -json "$module@$version"); then
  echo "build.sh: go mod download $module@$version failed: $info" >&2
  exit 1
fi
field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" <<<"$info" | head -n 1; }
got=$(field Sum)
src=$(field Dir)
if [ "$got" != "$sum" ]; then
  echo "build.sh: $module@$version has hash $got, $recipe pins $sum" >&2
  exit 1
fi
# The module cache is read-only; a build may write beside its sources (generated files, caches).
cp -r "$src/." "$dir.tmp/src/" && chmod -R u+w "$dir.tmp/src"
(cd "$dir.tmp/src" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -mod=readonly -trimpath \
  -ldflags="-s -w $ldflags" -o "$dir.tmp/" "${packages[@]}")
rm -rf "$dir.tmp/src"
for b in "${binaries[@]}"; do
  [ -x "$dir.tmp/$b" ] || { echo "build.sh: building $module made no $b" >&2; exit 1; }
done
rm -rf "$dir" && mv "$dir.tmp" "$dir"
trap - EXIT
echo "build.sh: built $name $version ($module) in $(( $(date +%s) - start )) s" >&2
echo "$dir"
