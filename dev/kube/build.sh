#!/usr/bin/env bash
# Builds kube-apiserver, kubectl, etcd and helm, and for the lab's real nodes kubelet, kube-proxy,
# kube-controller-manager and kube-scheduler, from the Go modules beside this script, through the
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
hash=$(cd "$here" && find . -name go.mod -o -name go.sum -o -name '*.go' -o -name build.sh | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12)
cache=${IRONLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ironlb}
dir="$cache/kube/k8s-$k8s-etcd-$etcd-helm-$helm-$hash"
want=(kube-apiserver kubectl etcd helm kubelet kube-proxy kube-controller-manager kube-scheduler)
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
# The version variables Kubernetes' own build sets (hack/lib/version.sh, kube::version::ldflags):
# without them every binary reports v0.0.0-master, `kubectl version` cannot parse the server's
# version and helm refuses charts with a kubeVersion constraint. The build date is the release's
# module time, so the same inputs give the same binaries; the module carries no git commit.
k8s_time=$(cd "$here/apiserver" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
k8s_minor=${k8s#v*.}; k8s_minor=${k8s_minor%%.*}
k8s_major=${k8s#v}; k8s_major=${k8s_major%%.*}
k8s_ldflags="-s"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$k8s_major -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitCommit=${KUBE_GIT_COMMIT:-} -X $pkg.gitTreeState=clean"
  k8s_ldflags+=" -X $pkg.buildDate=$k8s_time"
done
(cd "$here/apiserver" && go build -trimpath -ldflags="$k8s_ldflags" -o "$dir.tmp/" \
  ./cmd/kube-apiserver ./cmd/kubectl ./cmd/kubelet ./cmd/kube-proxy \
  ./cmd/kube-controller-manager ./cmd/kube-scheduler)
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
