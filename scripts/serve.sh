#!/usr/bin/env bash
# Install the serving dependencies into .venv (no TensorFlow), build the native gRPC front where it can be, and
# serve the bundled model on localhost:8000.
# Extra arguments go to `python -m service` (e.g. --port 9000, --model-repository DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
# gRPC's front in C++ where it can be built (it needs g++ and libgrpc++-dev); else gRPC runs on the Python front.
native/build.sh --if-possible
exec .venv/bin/python -m service "$@"
