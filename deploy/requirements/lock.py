"""Pin the dependencies of each image flavour from pyproject.toml: ``python deploy/requirements/lock.py``.

Writes ``cpu.txt``, ``gpu.txt`` and ``exporter.txt`` beside this file: every distribution the flavour needs, with its
exact version, resolved by pip from PyPI alone (``--isolated``: no local index or constraint from this machine) for
the Python of that image. ``deploy/install.sh`` installs a lock with ``--no-deps``, so an image holds exactly what its
lock lists; tests/deploy/test_locks.py fails when pyproject.toml asks for something a lock does not satisfy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
PYPROJECT = HERE.parents[1] / "pyproject.toml"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


@dataclass(frozen=True)
class Flavour:
    """One image flavour: its lock file, the Python of its base image, and what it installs."""

    name: str
    python: str
    description: str


FLAVOURS = (
    Flavour("cpu", "3.11", "the `cpu` image target (python:3.11-slim, ONNX Runtime for the CPU)"),
    Flavour("gpu", "3.12", "the `gpu` image target (Ubuntu 24.04's Python 3.12, onnxruntime-gpu on CUDA 13)"),
    Flavour("exporter", "3.11", "the `exporter` image target (python:3.11-slim, TensorFlow for the CPU)"),
)


def requirements(flavour: str, project: dict) -> list[str]:
    """What the flavour asks for: the serving dependencies, swapped to onnxruntime-gpu or joined by the export extra."""
    base = list(project["dependencies"])
    extras = project["optional-dependencies"]
    if flavour == "cpu":
        return base
    if flavour == "gpu":
        # onnxruntime-gpu replaces onnxruntime (both own the `onnxruntime` package). The CUDA image brings CUDA and
        # cuDNN, so the gpu extra's pip-packaged [cuda,cudnn] libraries are left out.
        gpu = [Requirement(r) for r in extras["gpu"] if canonicalize_name(Requirement(r).name) == "onnxruntime-gpu"]
        swapped = [r for r in base if canonicalize_name(Requirement(r).name) != "onnxruntime"]
        return swapped + [f"{r.name}{r.specifier}" for r in gpu]
    return base + list(extras["export"])


def resolve(wanted: list[str], python: str) -> dict[str, str]:
    """Name → version of everything pip would install for ``wanted`` on Linux x86-64 with this Python."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        command = [
            sys.executable, "-m", "pip", "install", "--isolated", "--quiet", "--dry-run", "--ignore-installed",
            "--only-binary=:all:", "--python-version", python, "--implementation", "cp", *platforms,
            "--target", str(Path(folder) / "unused"), "--report", str(report), *wanted,
        ]  # fmt: skip
        subprocess.run(command, check=True)  # noqa: S603 (this interpreter's pip, with fixed arguments)
        installs = json.loads(report.read_text())["install"]
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}


def render(flavour: Flavour, pins: dict[str, str]) -> str:
    header = [
        f"# Locked dependencies of {flavour.description}.",
        f"# python: {flavour.python}",
        "# Generated from pyproject.toml by `python deploy/requirements/lock.py`; do not edit by hand.",
    ]
    return "\n".join([*header, *(f"{name}=={version}" for name, version in sorted(pins.items()))]) + "\n"


def without_dependencies(flavour: str, project_file: dict) -> dict[str, str]:
    """The exporter's pins that pip cannot resolve with the rest (pyproject.toml's tool.attention-serve
    without-dependencies: keras-hub, tensorflow-text); the lock is installed with --no-deps anyway."""
    if flavour != "exporter":
        return {}
    pins = [Requirement(r) for r in project_file["tool"]["attention-serve"]["without-dependencies"]]
    return {canonicalize_name(r.name): str(r.specifier).removeprefix("==") for r in pins}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("flavours", nargs="*", default=[f.name for f in FLAVOURS], help="flavours to lock (all)")
    args = parser.parse_args(argv)
    document = tomllib.loads(PYPROJECT.read_text())
    project = document["project"]
    for flavour in FLAVOURS:
        if flavour.name in args.flavours:
            pins = resolve(requirements(flavour.name, project), flavour.python)
            pins |= without_dependencies(flavour.name, document)
            (HERE / f"{flavour.name}.txt").write_text(render(flavour, pins))
            print(f"{flavour.name}: {len(pins)} distributions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
