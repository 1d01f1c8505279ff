#!/usr/bin/env bash
# Builds kube-apiserver, kubectl, etcd and helm from the Go modules beside this script, through the
# Go module proxy, into a cache outside the repository keyed by versions and by a hash of the module
# files. A warm cache makes this a no-op. Prints the binary directory as its last line.
#   dev/kube/build.sh          build if needed, print the directory
#   dev/kube/build.sh --dir    print the directory only (exit 1 if not built)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
k8s=$(awk '/k8s.io\/kubernetes v/ {print $NF; exit}' "$here/apiserver/go.mod")
etcd=$(awk '/go.etcd.io\/etcd\/server\/v3 v/ {print $NF; exit}' "$here/etcd/go.mod")
helm=$(awk '$1 == "helm.sh/helm/v3" {print $2; exit}' "$here/helm/go.mod")
# The Kubernetes minor helm was built against: its default .Capabilities.KubeVersion and the
# version `helm lint` checks deprecations for (helm's own Makefile sets both the same way).
helm_k8s=$(awk '$1 == "k8s.io/client-go" {split($2, v, "."); print v[2]; exit}' "$here/helm/go.mod")
hash=$(cd "$here" && find . -name go.mod -o -name go.sum -o -name '*.go' | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12)
cache=${IRONLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ironlb}
dir="$cache/kube/k8s-$k8s-etcd-$etcd-helm-$helm-$hash"
want=(kube-apiserver kubectl etcd helm)
built() { for b in "${want[@]}"; do [ -x "$dir/$b" ] || return 1; done; }
if [ "${1:-}" = "--dir" ]; then built && echo "$dir" && exit 0; exit 1; fi
if built; then echo "$dir"; exit 0; fi
command -v go >/dev/null || { echo "build.sh: Go is required (https://go.dev/dl)" >&2; exit 1; }
# Concurrent runs (test sessions of several checkouts) build once: the others wait, then reuse it.
mkdir -p "$cache/kube"
exec 9>"$cache/kube/build.lock"
flock 9
if built; then echo "$dir"; exit 0; fi
mkdir -p "$dir.tmp"
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS=-mod=mod
(cd "$here/etcd" && go build -trimpath -ldflags=-s -o "$dir.tmp/" ./cmd/etcd)
(cd "$here/apiserver" && go build -trimpath -ldflags=-s -o "$dir.tmp/" ./cmd/kube-apiserver ./cmd/kubectl)
# A separate module: helm pins newer k8s.io modules than the apiserver module replaces them with.
helm_ldflags="-s -X helm.sh/helm/v3/internal/version.version=$helm"
for pkg in chartutil lint/rules; do
  helm_ldflags+=" -X helm.sh/helm/v3/pkg/$pkg.k8sVersionMajor=1"
  helm_ldflags+=" -X helm.sh/helm/v3/pkg/$pkg.k8sVersionMinor=$helm_k8s"
done
(cd "$here/helm" && go build -trimpath -ldflags="$helm_ldflags" -o "$dir.tmp/" helm.sh/helm/v3/cmd/helm)
rm -rf "$dir" && mv "$dir.tmp" "$dir"
echo "build.sh: built k8s $k8s, etcd $etcd and helm $helm in $(( $(date +%s) - start )) s" >&2
echo "$dir"
