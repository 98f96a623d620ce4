"""The offline checkers the deployment tests run: hadolint, check-jsonschema, kubernetes-validate, kubectl."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest


def tool(name: str) -> str:
    """A console tool installed beside this interpreter (the dev extra), else on PATH; fails the test if absent."""
    beside = Path(sysconfig.get_path("scripts")) / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def run(command: list[str], timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def python_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` with this interpreter."""
    return run([sys.executable, "-m", module, *args])
