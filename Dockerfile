# ironlb's image: `ironlb controller` and `ironlb speaker` (see deploy/).
#   docker build -t ghcr.io/ironlb/ironlb:0.1.0 .
# Both stages use the same base so the virtualenv's interpreter path exists in the final image.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# README.md is the package's long description (pyproject.toml `readme`).
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# The wheel first, then the wheel alone into the venv, with every dependency at the version
# constraints.txt pins: the image runs exactly what the tests ran.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /venv \
 && /venv/bin/pip install --constraint constraints.txt /wheels/ironlb-*.whl \
 && /venv/bin/ironlb --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="ironlb" \
      org.opencontainers.image.description="Bare-metal load balancer for Kubernetes (MetalLB API)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 65532 ironlb \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ironlb
COPY --from=builder /venv /venv
# The root filesystem is read-only in the manifests: nothing may try to write bytecode.
ENV PATH=/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Numeric, so the kubelet can check runAsNonRoot. The speaker's manifest overrides it with root
# plus only the capabilities it needs (see deploy/workloads/speaker.yaml).
USER 65532:65532
ENTRYPOINT ["ironlb"]
CMD ["--help"]
