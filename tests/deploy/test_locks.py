"""The pinned dependency sets of the images (deploy/requirements/*.txt) against pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT
from tests.deploy.tools import run

LOCKS = ROOT / "deploy" / "requirements"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"([a-z0-9][a-z0-9-]*)==([0-9][0-9A-Za-z.+!-]*)")


def read_lock(flavour: str) -> tuple[str, dict[str, str]]:
    """The Python version a lock was resolved for, and its pins (name -> version)."""
    python, pins = "", {}
    for line in (LOCKS / f"{flavour}.txt").read_text().splitlines():
        if line.startswith("# python: "):
            python = line.removeprefix("# python: ")
        elif line and not line.startswith("#"):
            match = PIN.fullmatch(line)
            assert match, f"{flavour}.txt: not a normalised exact pin: {line!r}"
            assert match[1] not in pins, f"{flavour}.txt pins {match[1]} twice"
            pins[match[1]] = match[2]
    assert python, f"{flavour}.txt does not say which Python it was resolved for"
    return python, pins


def wanted(flavour: str) -> list[Requirement]:
    """What pyproject.toml asks of each flavour; the gpu one swaps onnxruntime for onnxruntime-gpu."""
    base = [Requirement(r) for r in PROJECT["dependencies"]]
    extras = PROJECT["optional-dependencies"]
    if flavour == "gpu":
        gpu = [Requirement(r) for r in extras["gpu"]]
        return [r for r in base if r.name != "onnxruntime"] + [r for r in gpu if r.name == "onnxruntime-gpu"]
    if flavour == "exporter":
        return base + [Requirement(r) for r in extras["export"]]
    return base


@pytest.mark.parametrize("flavour", ["cpu", "gpu", "exporter"])
def test_lock_satisfies_what_pyproject_asks(flavour: str) -> None:
    python, pins = read_lock(flavour)
    environment = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux"}
    for requirement in wanted(flavour):
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{flavour}.txt lacks {requirement}: run python deploy/requirements/lock.py"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{flavour}.txt pins {name}=={pins[name]}, pyproject.toml asks {requirement}: "
            "run python deploy/requirements/lock.py"
        )


@pytest.mark.parametrize(("flavour", "runtime"), [("cpu", "onnxruntime"), ("gpu", "onnxruntime-gpu")])
def test_serving_locks_hold_one_onnx_runtime_and_no_tensorflow(flavour: str, runtime: str) -> None:
    _, pins = read_lock(flavour)
    # Both ONNX Runtime builds own the `onnxruntime` package: with both installed, one overwrites the other.
    assert {"onnxruntime", "onnxruntime-gpu"} & set(pins) == {runtime}
    assert not [name for name in pins if name.startswith(("tensorflow", "keras", "tf2onnx"))]


def test_exporter_lock_trains_on_the_cpu() -> None:
    _, pins = read_lock("exporter")
    assert "tensorflow-cpu" in pins
    assert "tensorflow" not in pins, "TensorFlow's GPU build pins CUDA 12"


def test_serving_locks_agree_where_they_can() -> None:
    """Same web stack in both images; only the ONNX Runtime build and what depends on the Python may differ."""
    _, cpu = read_lock("cpu")
    _, gpu = read_lock("gpu")
    differing = {name for name in cpu.keys() | gpu.keys() if cpu.get(name) != gpu.get(name)}
    assert differing <= {"onnxruntime", "onnxruntime-gpu", "numpy"}


def test_install_script_refuses_an_unknown_flavour() -> None:
    result = run(["sh", str(ROOT / "deploy" / "install.sh"), "tensorflow-gpu"])
    assert result.returncode == 2
    assert "usage" in result.stderr


def test_exporter_lock_holds_the_packages_installed_without_their_dependencies() -> None:
    """keras-hub and tensorflow-text, pinned in pyproject.toml (tool.attention-serve), are in the exporter's lock."""
    _, pins = read_lock("exporter")
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["attention-serve"]
    for requirement in map(Requirement, tool["without-dependencies"]):
        assert requirement.specifier.contains(pins.get(canonicalize_name(requirement.name), "0")), requirement
