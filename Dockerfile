# syntax=docker/dockerfile:1
# obsqc images (deploy/README.md): two targets from one file.
#
#   docker build --target cpu -t obsqc:0.1.0 .        # API and CPU workers (onnxruntime, CPU provider)
#   docker build --target gpu -t obsqc-gpu:0.1.0 .    # galaxy-scoring workers (onnxruntime-gpu, CUDA provider)
#
# Stages: `wheel` builds obsqc's wheel (weights inside, obsqc/models/weights); `cpu-venv` and `gpu-venv`
# install it with its dependencies into /opt/obsqc from binary wheels only, so no compiler is ever
# installed; `cpu` and `gpu` copy that virtual environment onto a clean base with a non-root user.
# Torch is not installed: the service scores with onnxruntime (the `train` extra is for training).
# tests/deploy/test_images.py lints this file with hadolint and runs the install steps of the cpu
# target in a fresh virtual environment: keep the install steps plain shell (one RUN per stage) with container paths under /src, /wheels and /opt/obsqc.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY obsqc/ obsqc/
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-venv
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels/ /wheels/
RUN python -m venv /opt/obsqc \
 && /opt/obsqc/bin/python -m pip install --only-binary=:all: /wheels/obsqc-*.whl

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
LABEL org.opencontainers.image.title="obsqc" \
      org.opencontainers.image.description="Real-time quality control of telescope exposures (API and CPU workers)" \
      org.opencontainers.image.licenses="BSD-3-Clause"
RUN groupadd --system --gid 10001 obsqc \
 && useradd --system --uid 10001 --gid obsqc --home-dir /var/lib/obsqc --no-create-home --shell /usr/sbin/nologin obsqc \
 && mkdir -p /var/lib/obsqc \
 && chown obsqc:obsqc /var/lib/obsqc
COPY --from=cpu-venv /opt/obsqc/ /opt/obsqc/
COPY --chmod=0755 deploy/docker/healthcheck.py /opt/obsqc/bin/obsqc-healthcheck
# OBSQC_HOME holds uploads, artifacts (plots, galaxy cutouts) and the multiprocess metric files; the numba
# kernel cache lives there too, so a restarted container does not compile again (BENCHMARKS.md, "Cold start").
ENV PATH=/opt/obsqc/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OBSQC_HOME=/var/lib/obsqc \
    NUMBA_CACHE_DIR=/var/lib/obsqc/numba-cache \
    MPLCONFIGDIR=/tmp/obsqc-matplotlib
VOLUME ["/var/lib/obsqc"]
WORKDIR /var/lib/obsqc
USER 10001:10001
EXPOSE 8000
# Liveness of the API (GET /healthz with Python's urllib). Worker containers run
# `obsqc-healthcheck worker` instead (their RQ heartbeat): deploy/docker-compose.yml, deploy/k8s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["obsqc-healthcheck", "api"]
ENTRYPOINT ["obsqc"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------------------------------------------
# The CUDA base brings Ubuntu 24.04's Python 3.12 and the CUDA 13 / cuDNN 9 libraries that
# onnxruntime-gpu 1.31 is built against. obsqc depends on `onnxruntime` (CPU); the two wheels install
# the same package, so the CPU one is removed before the GPU one goes in (`pip check` will name it).
FROM ${CUDA_IMAGE} AS gpu-venv
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels/ /wheels/
RUN python3 -m venv /opt/obsqc \
 && /opt/obsqc/bin/python -m pip install --only-binary=:all: /wheels/obsqc-*.whl \
 && /opt/obsqc/bin/python -m pip uninstall --yes onnxruntime \
 && /opt/obsqc/bin/python -m pip install --only-binary=:all: onnxruntime-gpu==1.31.1

# ---------------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS gpu
LABEL org.opencontainers.image.title="obsqc-gpu" \
      org.opencontainers.image.description="obsqc galaxy-scoring worker (onnxruntime-gpu, CUDA provider)" \
      org.opencontainers.image.licenses="BSD-3-Clause"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 obsqc \
 && useradd --system --uid 10001 --gid obsqc --home-dir /var/lib/obsqc --no-create-home --shell /usr/sbin/nologin obsqc \
 && mkdir -p /var/lib/obsqc \
 && chown obsqc:obsqc /var/lib/obsqc
COPY --from=gpu-venv /opt/obsqc/ /opt/obsqc/
COPY --chmod=0755 deploy/docker/healthcheck.py /opt/obsqc/bin/obsqc-healthcheck
ENV PATH=/opt/obsqc/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OBSQC_HOME=/var/lib/obsqc \
    NUMBA_CACHE_DIR=/var/lib/obsqc/numba-cache \
    MPLCONFIGDIR=/tmp/obsqc-matplotlib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
VOLUME ["/var/lib/obsqc"]
WORKDIR /var/lib/obsqc
USER 10001:10001
# The RQ heartbeat of this container's galaxy workers (no HTTP port in a worker).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["obsqc-healthcheck", "worker"]
ENTRYPOINT ["obsqc"]
CMD ["worker", "--queue", "gpu"]
