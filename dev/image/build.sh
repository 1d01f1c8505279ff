#!/usr/bin/env bash
# Builds OCI image archives without Docker and without a registry, into a cache outside the
# repository keyed by a hash of everything that goes into each image. A warm cache is a no-op.
# Prints the archive path as its last line. Targets:
#   ironlb (default)  ghcr.io/ironlb/ironlb:<pyproject version>: Debian's python3 + the wheels
#                     constraints.txt pins + ironlb's own wheel, non-root 65532, entrypoint ironlb
#   pause             registry.k8s.io/pause:<tag of the Kubernetes in dev/kube/apiserver/go.mod>,
#                     pause.c of that very module, for containerd's sandbox_image
#   dev/image/build.sh [ironlb|pause] [--path]   (--path: print the path only, exit 1 if not built)
# Each archive is a tar of an OCI image layout whose index.json names the full reference twice:
# org.opencontainers.image.ref.name and io.containerd.image.name, so `ctr images import`, kind and
# k3s name it without --base-name. Both targets share pack(): one layer, one config, one naming.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${IRONLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ironlb}/image

target=ironlb
path_only=
for arg in "$@"; do
  case $arg in
    ironlb | pause) target=$arg ;;
    --path) path_only=1 ;;
    *) echo "build.sh: unknown argument '$arg' (want: [ironlb|pause] [--path])" >&2; exit 2 ;;
  esac
done

die() { echo "build.sh: $*" >&2; exit 1; }
need() { for c in "$@"; do command -v "$c" >/dev/null || die "$c is required (make apt installs it)"; done; }

# pack ROOTFS REF OUT [umoci config flags...]: ROOTFS (consumed: moved, then removed) becomes the
# image's single layer; REF its full name; OUT the OCI archive. umoci's `insert` writes truncated
# layers in Debian's 0.4.7, so the layer comes from unpack of an empty image + repack.
pack() {
  local rootfs=$1 ref=$2 out=$3 work
  shift 3
  work=$(mktemp -d "$cache/pack.XXXXXX")
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:img"
  umoci unpack --image "$work/oci:img" "$work/bundle" >/dev/null
  rmdir "$work/bundle/rootfs"
  mv "$rootfs" "$work/bundle/rootfs"
  umoci repack --image "$work/oci:img" --history.created_by="dev/image/build.sh $target" "$work/bundle"
  umoci config --image "$work/oci:img" --history.created_by="dev/image/build.sh $target" "$@"
  umoci gc --layout "$work/oci"
  # The layout's only manifest carries the full reference; umoci's own tag ("img") is dropped.
  python3 - "$work/oci/index.json" "$ref" <<'EOF'
import json, sys
path, ref = sys.argv[1], sys.argv[2]
with open(path) as f:
    index = json.load(f)
(manifest,) = index["manifests"]
manifest["annotations"] = {"org.opencontainers.image.ref.name": ref, "io.containerd.image.name": ref}
with open(path, "w") as f:
    json.dump(index, f, separators=(",", ":"))
EOF
  chmod -R a+rX "$work/oci"
  tar -C "$work/oci" --sort=name --owner=0 --group=0 --numeric-owner -cf "$out.tmp" \
    oci-layout index.json blobs
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

# --- pause ---------------------------------------------------------------------------------------
pause_inputs() {
  need go python3
  k8s=$(awk '/k8s.io\/kubernetes v/ {print $NF; exit}' "$repo/dev/kube/apiserver/go.mod")
  # The tag and CFLAGS are those of build/pause/Makefile in the module itself. Its REV is `git
  # describe --contains` of the release commit, i.e. the release tag, which the module cache
  # has no git for: the module version is that tag.
  moddir=$(cd "$repo/dev/kube/apiserver" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$k8s" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  src="$moddir/build/pause/linux/pause.c"
  [ -f "$src" ] || die "$src missing"
  tag=$(awk '$1 == "TAG" && $2 == "?=" {print $3; exit}' "$moddir/build/pause/Makefile")
  [ -n "$tag" ] || die "no TAG in $moddir/build/pause/Makefile"
  # kubelet 1.36 has no sandbox image setting of its own any more (the runtime's sandbox_image
  # decides); this TAG is the one kubeadm's PauseVersion and the e2e image manifest pin.
  ref="registry.k8s.io/pause:$tag"
  hash=$(cat "$src" "$here/build.sh" <(echo "$k8s $tag") | sha256sum | cut -c1-12)
  out="$cache/pause-$tag-$k8s-$hash.tar"
}

build_pause() {
  need go gcc strip umoci
  local rootfs
  rootfs=$(mktemp -d "$cache/pause-rootfs.XXXXXX")
  gcc -Os -Wall -Werror -static -DVERSION="v$tag-$k8s" -o "$rootfs/pause" "$src"
  strip "$rootfs/pause"
  chmod 0755 "$rootfs"
  # As upstream's Dockerfile: nobody-like 65535, the binary as entrypoint.
  pack "$rootfs" "$ref" "$out" --config.user=65535:65535 --config.entrypoint=/pause \
    --clear=config.cmd --clear=config.env
}

# --- ironlb --------------------------------------------------------------------------------------
# The Debian base (minbase + debian-packages, slimmed like debian:bookworm-slim) is cached on its
# own, keyed by what goes into it: a change of ironlb's sources rebuilds only the layer on top.
suite=bookworm
debian_options=(--variant=minbase --aptopt='APT::Install-Recommends "false"'
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --skip=output/dev
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias')

ironlb_inputs() {
  version=$(awk -F'"' '$1 == "version = " {print $2; exit}' "$repo/pyproject.toml")
  [ -n "$version" ] || die "no version in $repo/pyproject.toml"
  ref="ghcr.io/ironlb/ironlb:$version"
  mapfile -t mirrors < <(python3 "$here/apt_sources.py" "$suite")
  packages=$(grep -v '^#' "$here/debian-packages" | xargs | tr ' ' ,)
  base_hash=$(printf '%s\n' "$suite" "$packages" "${mirrors[@]}" "${debian_options[@]}" |
    sha256sum | cut -c1-12)
  base="$cache/debian-$suite-$base_hash.tar"
  # File names and contents: src/ without bytecode, the package metadata, and this directory.
  hash=$(cd "$repo" && {
    find src dev/image -name __pycache__ -prune -o -type f ! -name '*.pyc' -print0 | LC_ALL=C sort -z |
      xargs -0 sha256sum
    sha256sum pyproject.toml constraints.txt README.md
    echo "$base_hash"
  } | sha256sum | cut -c1-12)
  out="$cache/ironlb-$version-$hash.tar"
}

build_base() {
  [ -f "$base" ] && return
  # Root mode in a private mount namespace: mmdebstrap's mounts in the chroot stay out of the host.
  if ! unshare -m --propagation private mmdebstrap --mode=root --format=tar --quiet \
    "${debian_options[@]}" --include="$packages" "$suite" "$base.tmp" "${mirrors[@]}" \
    >"$cache/debian.log" 2>&1; then
    tail -n 20 "$cache/debian.log" >&2
    die "mmdebstrap failed (whole log: $cache/debian.log)"
  fi
  mv "$base.tmp" "$base"
}

build_ironlb() {
  need mmdebstrap umoci unshare chroot python3
  local work rootfs
  build_base
  work=$(mktemp -d "$cache/ironlb-work.XXXXXX")
  PYTHON=$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3) \
    "$here/fetch-wheels.sh" "$repo" "$work/wheels"
  rootfs="$work/rootfs"
  mkdir "$rootfs"
  tar -C "$rootfs" --numeric-owner -xpf "$base"
  cp -r "$work/wheels" "$here/install-rootfs.sh" "$rootfs/tmp/"
  # Chrooted, without network, a private /dev with only what Python needs; gone on exit.
  unshare -m -n --propagation private sh -euc '
    mkdir -p "$1/dev"
    mount -t tmpfs -o mode=0755 tmpfs "$1/dev"
    for n in null zero random urandom; do touch "$1/dev/$n"; mount --bind "/dev/$n" "$1/dev/$n"; done
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$1" /bin/sh /tmp/install-rootfs.sh /tmp/wheels' - "$rootfs"
  rm -rf "${rootfs:?}"/tmp/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*
  # The same configuration as the Dockerfile's (tests/integration/test_image.py compares them).
  pack "$rootfs" "$ref" "$out" --config.user=65532:65532 --config.entrypoint=ironlb \
    --config.cmd=--help --config.workingdir=/ \
    --config.env=PATH=/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env=PYTHONDONTWRITEBYTECODE=1 --config.env=PYTHONUNBUFFERED=1 \
    --config.label=org.opencontainers.image.title=ironlb \
    --config.label=org.opencontainers.image.description="Bare-metal load balancer for Kubernetes (MetalLB API)" \
    --config.label=org.opencontainers.image.licenses=Apache-2.0 \
    --config.label=org.opencontainers.image.version="$version"
  rm -rf "$work"
}

# --- main ----------------------------------------------------------------------------------------
mkdir -p "$cache"
"${target}_inputs"
if [ -n "$path_only" ]; then [ -f "$out" ] && echo "$out" && exit 0; exit 1; fi
if [ -f "$out" ]; then echo "$out"; exit 0; fi
# Files owned by root and other users in the layer, mmdebstrap's root mode, chroot.
[ "$(id -u)" = 0 ] || die "building $ref needs root (run: sudo $0 $target)"
# Concurrent runs (several checkouts, a test and `make lab`) build once: the others wait.
exec 9>"$cache/build.lock"
flock 9
if [ -f "$out" ]; then echo "$out"; exit 0; fi
# Under the lock no other build runs: whatever work a crashed one left is garbage.
rm -rf "$cache"/pack.* "$cache"/*-rootfs.* "$cache"/*-work.* "$cache"/*.tmp
trap 'rm -rf "$cache"/pack.* "$cache"/*-rootfs.* "$cache"/*-work.* "$cache"/*.tmp' EXIT
start=$(date +%s)
"build_$target"
# Every change of the inputs (src/ above all) makes a new archive: keep the newest few. (ls fails
# when a pattern matches nothing, e.g. no Debian base yet when pause is built first on a fresh
# machine: under pipefail that used to end this script with status 2 and no message.)
{ ls -t "$cache/$target"-*.tar "$cache"/debian-*.tar 2>/dev/null || true; } | awk -F/ '
  {kind = $NF; sub(/-.*/, "", kind)} ++n[kind] > (kind == "debian" ? 1 : 3)' | xargs -r rm -f
echo "build.sh: built $ref in $(($(date +%s) - start)) s ($(du -h "$out" | cut -f1))" >&2
echo "$out"
