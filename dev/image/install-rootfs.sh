#!/bin/sh
# Installs ironlb into the Debian root filesystem it runs in: dev/image/build.sh runs it chrooted
# into its mmdebstrap rootfs (no network), the Dockerfile in its final stage. A virtualenv at /venv
# on Debian's python3 gets ironlb's wheel and the dependency wheels constraints.txt pins, all from
# WHEELS (fetch-wheels.sh) and nothing else; pip runs from its own wheel, so neither pip nor
# setuptools ends up in the image (checked). Then the non-root user 65532 the image runs as.
#   install-rootfs.sh WHEELS
set -eu
wheels=$1
python3 -m venv --without-pip /venv
pip=$(echo "$wheels"/pip/pip-*.whl)
ironlb=$(echo "$wheels"/ironlb-*.whl)
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \
  /venv/bin/python "$pip/pip" install --quiet --no-index --find-links "$wheels" --only-binary=:all: \
  --constraint "$wheels/constraints.txt" "$ironlb"
for module in pip setuptools wheel; do
  if /venv/bin/python -c "import $module" 2>/dev/null; then
    echo "install-rootfs.sh: $module is importable in the image" >&2
    exit 1
  fi
done
# Plain lines rather than useradd: minbase has no `passwd` package.
grep -q '^ironlb:' /etc/group || echo 'ironlb:x:65532:' >>/etc/group
grep -q '^ironlb:' /etc/passwd ||
  echo 'ironlb:x:65532:65532:ironlb:/nonexistent:/usr/sbin/nologin' >>/etc/passwd
/venv/bin/ironlb --version
