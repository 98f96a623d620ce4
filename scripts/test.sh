#!/usr/bin/env bash
# Install everything the checks need into .venv, then lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[export,dev]"
# keras-hub and tensorflow-text without their pins (pyproject.toml, tool.attention-serve.without-dependencies).
.venv/bin/python -m pip install --quiet --no-deps $(.venv/bin/python -c \
  'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["tool"]["attention-serve"]["without-dependencies"])')
# KServe's SDK lives in a virtualenv of its own (its gRPC messages clash with tritonclient's in one process).
.venv/bin/python -m tests.e2e.kserve_env >/dev/null
# The browser test drives Debian's Chromium (nothing downloads a browser); the protocol benchmark's test loads the
# server with Debian's h2load (nghttp2-client).
if ! command -v chromium >/dev/null 2>&1 || ! command -v h2load >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium nghttp2-client >/dev/null
fi
# The native gRPC front (gRPC's C++ server; Debian's g++ and libgrpc++-dev, installed by the script when missing):
# the gRPC tests run on it as the default, and on the Python front beside it.
native/build.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
