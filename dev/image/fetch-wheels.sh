#!/bin/sh
# Puts every wheel ironlb's image installs into OUT, for install-rootfs.sh: ironlb's own wheel built
# from REPO; its dependencies at exactly the versions REPO/constraints.txt pins, as binary wheels
# for Debian bookworm's CPython 3.11 on glibc 2.36 whatever interpreter runs this; constraints.txt;
# and pip's own wheel under OUT/pip, which install-rootfs.sh runs from and never installs. Runs on
# the build host (dev/image/build.sh: the host's pip trusts the host's CA) or in the Dockerfile.
#   fetch-wheels.sh REPO OUT      (PYTHON: an interpreter that has pip; default python3)
set -eu
repo=$1
out=$2
py=${PYTHON:-python3}
pip_version=26.3
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
arch=$(uname -m)
# pip does not widen manylinux_2_36 to the older glibc tags itself (it does for manylinux2014):
# every one, newest (preferred) first.
target="--only-binary=:all: --implementation=cp --python-version=3.11 --abi=cp311"
glibc=36
while [ $glibc -gt 17 ]; do
  target="$target --platform=manylinux_2_${glibc}_$arch"
  glibc=$((glibc - 1))
done
target="$target --platform=manylinux2014_$arch"
mkdir -p "$out/pip"
# The build backend too at the version constraints.txt pins (build isolation reads PIP_CONSTRAINT).
PIP_CONSTRAINT="$repo/constraints.txt" "$py" -m pip wheel -q --no-deps --wheel-dir "$out" "$repo"
# shellcheck disable=SC2086
"$py" -m pip download -q $target --constraint "$repo/constraints.txt" --dest "$out" "$out"/ironlb-*.whl
# shellcheck disable=SC2086
"$py" -m pip download -q $target --no-deps --dest "$out/pip" "pip==$pip_version"
cp "$repo/constraints.txt" "$out/constraints.txt"
