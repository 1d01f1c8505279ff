#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from the Go modules beside this script, through the Go
# module proxy, into a cache outside the repository keyed by versions and by a hash of the module
# files. A warm cache makes this a no-op. Prints the binary directory as its last line.
#   dev/kube/build.sh          build if needed, print the directory
#   dev/kube/build.sh --dir    print the directory only (exit 1 if not built)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
k8s=$(awk '/k8s.io\/kubernetes v/ {print $NF; exit}' "$here/apiserver/go.mod")
etcd=$(awk '/go.etcd.io\/etcd\/server\/v3 v/ {print $NF; exit}' "$here/etcd/go.mod")
hash=$(cd "$here" && find . -name go.mod -o -name go.sum -o -name '*.go' | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12)
cache=${IRONLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ironlb}
dir="$cache/kube/k8s-$k8s-etcd-$etcd-$hash"
want=(kube-apiserver kubectl etcd)
built() { for b in "${want[@]}"; do [ -x "$dir/$b" ] || return 1; done; }
if [ "${1:-}" = "--dir" ]; then built && echo "$dir" && exit 0; exit 1; fi
if built; then echo "$dir"; exit 0; fi
command -v go >/dev/null || { echo "build.sh: Go is required (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$dir.tmp"
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS=-mod=mod
(cd "$here/etcd" && go build -trimpath -ldflags=-s -o "$dir.tmp/" ./cmd/etcd)
(cd "$here/apiserver" && go build -trimpath -ldflags=-s -o "$dir.tmp/" ./cmd/kube-apiserver ./cmd/kubectl)
rm -rf "$dir" && mv "$dir.tmp" "$dir"
echo "build.sh: built k8s $k8s and etcd $etcd in $(( $(date +%s) - start )) s" >&2
echo "$dir"
