# syntax=docker/dockerfile:1
# ironlb's image for those with Docker: `ironlb controller` and `ironlb speaker` (see deploy/).
#   DOCKER_BUILDKIT=1 docker build -t ghcr.io/ironlb/ironlb:0.1.0 .
# The same recipe as `make image` (dev/image/build.sh, no Docker needed), from the same inputs:
# Debian bookworm with the packages in dev/image/debian-packages (Debian's python3), the wheels
# dev/image/fetch-wheels.sh gathers (ironlb's own and those constraints.txt pins), installed by
# dev/image/install-rootfs.sh. Only the base differs: debian:bookworm-slim here, an equally slim
# mmdebstrap minbase there. tests/integration/test_image.py checks the configuration below
# against the image build.sh makes.
ARG DEBIAN=debian:bookworm-slim

FROM ${DEBIAN} AS wheels
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip \
 && rm -rf /var/lib/apt/lists/*
# README.md is the package's long description (pyproject.toml `readme`).
COPY pyproject.toml constraints.txt README.md /src/
COPY src /src/src
COPY dev/image/fetch-wheels.sh /usr/local/bin/
RUN PIP_NO_CACHE_DIR=1 fetch-wheels.sh /src /wheels

FROM ${DEBIAN}
COPY dev/image/debian-packages /tmp/
RUN apt-get update \
 && grep -v '^#' /tmp/debian-packages | DEBIAN_FRONTEND=noninteractive \
    xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* /tmp/*
# The wheels and the script are mounted, not copied: nothing of them stays in a layer.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    --mount=type=bind,source=dev/image/install-rootfs.sh,target=/install-rootfs.sh \
    sh /install-rootfs.sh /wheels
LABEL org.opencontainers.image.title="ironlb" \
      org.opencontainers.image.description="Bare-metal load balancer for Kubernetes (MetalLB API)" \
      org.opencontainers.image.licenses="Apache-2.0"
# The root filesystem is read-only in the manifests: nothing may try to write bytecode.
ENV PATH=/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Numeric, so the kubelet can check runAsNonRoot. The speaker's manifest overrides it with root
# plus only the capabilities it needs (see deploy/workloads/speaker.yaml).
USER 65532:65532
ENTRYPOINT ["ironlb"]
CMD ["--help"]
