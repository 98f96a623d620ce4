"""scripts/gpu_check.sh on the CPU: the flow the lent GPU machine runs, with the provider switched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def gpu_check(out: Path, provider: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ATTENTION_SERVE_", "GPU_CHECK_"))},
        "PYTHON": sys.executable,
        "OUT": str(out),
        "GPU_CHECK_PROVIDER": provider,
        "GPU_CHECK_BENCH": "0",  # the benchmark has its own tests; here it would only cost minutes
        "GPU_CHECK_READY_WITHIN_S": "90",
    }
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    summary_path = out / "summary.json"
    assert summary_path.is_file(), result.stdout + result.stderr
    return result, json.loads(summary_path.read_text())


def test_cpu_run_passes_every_check_and_writes_its_results(tmp_path: Path) -> None:
    result, summary = gpu_check(tmp_path, "CPUExecutionProvider")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary["ok"] is True
    assert summary["provider"] == "CPUExecutionProvider"
    checks = summary["checks"]
    assert checks["test_provider_sentiment"]["detail"]["in_use"][0] == "CPUExecutionProvider"
    assert {"test_ready", "cpu_ready", "parity_sentiment", "test_stopped_gracefully"} <= set(checks)
    assert all(check["ok"] for check in checks.values())
    worst = checks["parity_sentiment"]["detail"]["largest_difference"]
    assert max(worst.values()) <= summary["tolerance"] == 1e-3
    parity = json.loads((tmp_path / "parity.json").read_text())["sentiment"]
    assert {row["mode"] for row in parity} == {"alone", "batched"}
    assert all(row["difference"] is not None for row in parity)
    assert summary["benchmark"] == "skipped (GPU_CHECK_BENCH=0)"
    environment = json.loads((tmp_path / "environment.json").read_text())
    assert "CPUExecutionProvider" in environment["available_providers"]
    assert (tmp_path / "server-test.log").stat().st_size > 0
    assert (tmp_path / "server-cpu.log").stat().st_size > 0


def test_run_fails_when_the_provider_asked_for_does_not_serve(tmp_path: Path) -> None:
    """As on a GPU machine where CUDA is missing: the check fails, says why, and runs no benchmark."""
    result, summary = gpu_check(tmp_path, "MissingExecutionProvider")
    assert result.returncode == 1
    assert summary["ok"] is False
    assert summary["checks"]["test_ready"]["ok"] is False
    assert "MissingExecutionProvider" in summary["checks"]["test_ready"]["detail"]
    assert summary["benchmark"] == "not run (a check failed)"
    assert "FAILED" in result.stdout
