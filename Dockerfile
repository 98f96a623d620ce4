# syntax=docker/dockerfile:1
# attention-serve images (docs/DEPLOY.md). Three targets, all from this one file:
#
#   gpu       the service on NVIDIA CUDA 13 + cuDNN 9 with onnxruntime-gpu (the default: the last stage)
#               docker build -t attention-serve:gpu .
#   cpu       the service on python:3.11-slim with ONNX Runtime for the CPU
#               docker build --target cpu -t attention-serve:cpu .
#   exporter  trains and exports the next model version with TensorFlow (CPU) into /models
#               docker build --target exporter -t attention-serve-exporter .
#
# Each target's Python dependencies are pinned in deploy/requirements/<target>.txt (python deploy/requirements/lock.py
# writes them from pyproject.toml) and installed by deploy/install.sh, the script tests/deploy/test_image_smoke.py
# also runs. The serving images hold no TensorFlow; install.sh fails the build if one would.
#
# The serving images read the bundled model repository from /models; mount a folder over it to serve your own
# (docker-compose.yml does, so a newly exported version is served without a restart).

ARG PYTHON_IMAGE=python:3.11-slim-trixie
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------------------------------
# cpu: build the virtual environment, then copy it into a clean image.
FROM ${PYTHON_IMAGE} AS cpu-build
# The native gRPC front's compiler and gRPC's C++ library (native/build.sh links them in; this stage is discarded).
# Unpinned: Debian drops superseded package versions from its archive; the base image tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ pkg-config libgrpc++-dev \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHON=/opt/venv/bin/python
RUN python -m venv /opt/venv
WORKDIR /src
COPY deploy/install.sh deploy/install.sh
COPY deploy/requirements/cpu.txt deploy/requirements/cpu.txt
RUN --mount=type=cache,target=/root/.cache/pip sh deploy/install.sh cpu --deps-only
# gRPC's front process in C++ (GRPC_SERVER=auto finds it on the PATH under this name).
COPY native/build.sh native/grpc_front.cc native/
RUN native/build.sh && install -m 0755 native/build/grpc_front /opt/venv/bin/attention-serve-grpc-front
COPY pyproject.toml README.md ./
COPY service service
COPY model_export model_export
COPY model_format model_format
RUN --mount=type=cache,target=/root/.cache/pip sh deploy/install.sh cpu

FROM ${PYTHON_IMAGE} AS cpu
LABEL org.opencontainers.image.title="attention-serve (CPU)" \
      org.opencontainers.image.description="Attention models over REST and Open Inference v2, ONNX Runtime on the CPU" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 serve \
    && useradd --system --uid 10001 --gid serve --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin serve
COPY --from=cpu-build /opt/venv /opt/venv
# Owned by root and read-only to the service, which only ever reads its repository.
COPY models /models
# The graceful shutdown (8 s) fits within `docker stop`'s default 10 s; docker-compose.yml and the Kubernetes
# manifests raise both together.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ATTENTION_SERVE_HOST=0.0.0.0 \
    ATTENTION_SERVE_PORT=8000 \
    ATTENTION_SERVE_GRPC_PORT=8001 \
    ATTENTION_SERVE_MODEL_REPOSITORY=/models \
    ATTENTION_SERVE_GRACEFUL_SHUTDOWN_S=8 \
    ATTENTION_SERVE_PROVIDERS=CPUExecutionProvider
USER 10001:10001
EXPOSE 8000 8001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('ATTENTION_SERVE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["python", "-m", "service"]

# ---------------------------------------------------------------------------------------------------------------------
# exporter: TensorFlow (CPU) and the exporter; writes the next version of a model into the repository at /models.
FROM ${PYTHON_IMAGE} AS exporter-build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHON=/opt/venv/bin/python
RUN python -m venv /opt/venv
WORKDIR /src
COPY deploy/install.sh deploy/install.sh
COPY deploy/requirements/exporter.txt deploy/requirements/exporter.txt
RUN --mount=type=cache,target=/root/.cache/pip sh deploy/install.sh exporter --deps-only
COPY pyproject.toml README.md ./
COPY service service
COPY model_export model_export
COPY model_format model_format
RUN --mount=type=cache,target=/root/.cache/pip sh deploy/install.sh exporter

FROM ${PYTHON_IMAGE} AS exporter
LABEL org.opencontainers.image.title="attention-serve exporter" \
      org.opencontainers.image.description="Trains a Keras attention classifier and exports it to ONNX" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 serve \
    && useradd --system --uid 10001 --gid serve --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin serve
COPY --from=exporter-build /opt/venv /opt/venv
# HOME=/tmp: Keras keeps its config under $HOME, and the exporter may run as any uid (e.g. the host user's).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["python", "-m", "model_export"]
CMD ["train", "--repository", "/models", "--quiet"]

# ---------------------------------------------------------------------------------------------------------------------
# gpu: Ubuntu 24.04's Python 3.12 on the CUDA 13 + cuDNN 9 runtime, which onnxruntime-gpu >= 1.27 links against
# (the host needs an NVIDIA driver for CUDA 13, 580 or newer, and the NVIDIA Container Toolkit).
FROM ${CUDA_IMAGE} AS gpu-base
# Unpinned: Ubuntu drops superseded package versions from its archive, so a pinned version would break the build
# after the next security update; the base image tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 serve \
    && useradd --system --uid 10001 --gid serve --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin serve

FROM gpu-base AS gpu-build
# Unpinned for the same reason as in gpu-base; this stage is discarded.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv ca-certificates g++ pkg-config libgrpc++-dev \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHON=/opt/venv/bin/python
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY deploy/install.sh deploy/install.sh
COPY deploy/requirements/gpu.txt deploy/requirements/gpu.txt
RUN --mount=type=cache,target=/root/.cache/pip sh deploy/install.sh gpu --deps-only
# gRPC's front process in C++ (GRPC_SERVER=auto finds it on the PATH under this name).
COPY native/build.sh native/grpc_front.cc native/
RUN native/build.sh && install -m 0755 native/build/grpc_front /opt/venv/bin/attention-serve-grpc-front
COPY pyproject.toml README.md ./
COPY service service
COPY model_export model_export
COPY model_format model_format
RUN --mount=type=cache,target=/root/.cache/pip sh deploy/install.sh gpu

FROM gpu-base AS gpu
LABEL org.opencontainers.image.title="attention-serve (GPU)" \
      org.opencontainers.image.description="Attention models over REST and Open Inference v2, ONNX Runtime on CUDA 13" \
      org.opencontainers.image.licenses="MIT"
COPY --from=gpu-build /opt/venv /opt/venv
# Owned by root and read-only to the service, which only ever reads its repository.
COPY models /models
# CUDA first; ONNX Runtime falls back to the CPU (the service logs a warning) where no GPU is visible.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ATTENTION_SERVE_HOST=0.0.0.0 \
    ATTENTION_SERVE_PORT=8000 \
    ATTENTION_SERVE_GRPC_PORT=8001 \
    ATTENTION_SERVE_MODEL_REPOSITORY=/models \
    ATTENTION_SERVE_GRACEFUL_SHUTDOWN_S=8 \
    ATTENTION_SERVE_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider
USER 10001:10001
EXPOSE 8000 8001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('ATTENTION_SERVE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["python", "-m", "service"]
