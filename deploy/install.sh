#!/bin/sh
# Install attention-serve and the locked dependencies of one image flavour into the environment of $PYTHON.
# The Dockerfile's build stages run this script, and so does tests/deploy/test_image_smoke.py: what the test
# installs is what the image holds.
#
# Usage: deploy/install.sh cpu|gpu|exporter [--deps-only]
#   --deps-only   install the lock alone (the Dockerfile does it first, so source edits keep that layer cached)
# Environment: PYTHON (default: python) is the interpreter of the target environment, usually a virtualenv's.
set -eu

usage="usage: deploy/install.sh cpu|gpu|exporter [--deps-only]"
flavour=${1:?$usage}
mode=${2:-all}
PYTHON=${PYTHON:-python}
root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
lock="$root/deploy/requirements/$flavour.txt"
case "$flavour" in cpu | gpu | exporter) ;; *) echo "$usage" >&2; exit 2 ;; esac
case "$mode" in all | --deps-only) ;; *) echo "$usage" >&2; exit 2 ;; esac

# --no-deps: the lock is complete; anything it lacks is caught by `pip check` below instead of being fetched unpinned.
"$PYTHON" -m pip install --no-deps --only-binary=:all: --requirement "$lock"
[ "$mode" = --deps-only ] && exit 0
"$PYTHON" -m pip install --no-deps "$root"

# attention-serve declares `onnxruntime`; in the gpu flavour onnxruntime-gpu provides that very package instead,
# so that one report is expected there and any other is an error. In the exporter, keras-hub and tensorflow-text
# are locked without their own pins (pyproject.toml, tool.attention-serve): tensorflow-cpu provides the `tensorflow`
# package tensorflow-text names, and keras-hub's kagglehub (optional: presets are read from local folders) is left out.
report=$("$PYTHON" -m pip check 2>&1) && status=0 || status=$?
if [ "$flavour" = gpu ]; then
    report=$(printf '%s\n' "$report" | grep -v '^attention-serve [^ ]* requires onnxruntime, which is not installed\.$' || true)
    [ -z "$report" ] && status=0
fi
if [ "$flavour" = exporter ]; then
    report=$(printf '%s\n' "$report" \
        | grep -v -e '^tensorflow-text [^ ]* requires tensorflow, which is not installed\.$' \
            -e '^keras-hub [^ ]* requires kagglehub, which is not installed\.$' \
            -e '^keras-hub [^ ]* requires kagglesdk, which is not installed\.$' || true)
    [ -z "$report" ] && status=0
fi
if [ "$status" -ne 0 ]; then
    printf 'deploy/install.sh: the %s environment is inconsistent:\n%s\n' "$flavour" "$report" >&2
    exit 1
fi

# What each flavour must and must not hold: the serving images never carry TensorFlow, and exactly one ONNX Runtime
# build owns the `onnxruntime` package.
"$PYTHON" - "$flavour" <<'PY'
import importlib.metadata as metadata
import importlib.util
import sys

flavour = sys.argv[1]
installed = {dist.metadata["Name"].lower() for dist in metadata.distributions()}
runtimes = sorted(installed & {"onnxruntime", "onnxruntime-gpu"})
expected = ["onnxruntime-gpu"] if flavour == "gpu" else ["onnxruntime"]
problems = []
if runtimes != expected:
    problems.append(f"ONNX Runtime distributions {runtimes}, expected {expected}")
if flavour != "exporter" and importlib.util.find_spec("tensorflow") is not None:
    problems.append("TensorFlow is importable in a serving environment")
if flavour == "exporter" and importlib.util.find_spec("tensorflow") is None:
    problems.append("TensorFlow is missing from the exporter environment")
if problems:
    sys.exit("deploy/install.sh: " + "; ".join(problems))
print(f"deploy/install.sh: {flavour} environment ready ({len(installed)} distributions)")
PY
