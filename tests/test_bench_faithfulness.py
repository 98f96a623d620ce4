"""bench/faithfulness.py scores the service's explanations through the real server with the service's own ERASER
code: run it, tiny, on the bundled model so it breaks when the API or the metrics change. No number is asserted
beyond what holds by construction (the benchmark reports the numbers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

RANKINGS = {"attention", "rollout", "occlusion", "random"}


def test_the_faithfulness_bench_scores_every_ranking_on_the_bundled_model(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "bench" / "faithfulness.py"), "--out", str(tmp_path), "--texts", "4",
               "--datasets", "bundled"]  # fmt: skip
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = json.loads((tmp_path / "faithfulness.json").read_text())
    assert result["texts"] == 4
    assert set(result["comprehensiveness"]) == set(result["sufficiency"]) == RANKINGS
    assert all(-1.0 <= value <= 1.0 for value in result["comprehensiveness"].values())
    assert result["needle_top"] is None
    assert "| bundled (sentiment) | 4 | occlusion |" in (tmp_path / "faithfulness.md").read_text()
