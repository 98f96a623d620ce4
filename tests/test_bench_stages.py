"""bench/stages.py calls the service's own functions, so it breaks when they change: run it, tiny, on the real model.

No timing is asserted (speed is the benchmark's business); the harness must run and report every stage.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_the_stage_harness_runs_against_the_current_service() -> None:
    command = [sys.executable, str(ROOT / "bench" / "stages.py"), "--seconds", "0.01", "--per-request", "1"]
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    stages = [stage["stage"] for stage in report["stages"]["1"]]
    assert len(stages) == 9
    assert stages[-1] == "whole ASGI request, no socket"
    assert all(stage["wall_us"] > 0 for stage in report["stages"]["1"])
    assert [rate["callers"] for rate in report["in_process"]["1"]] == [1, 32]
