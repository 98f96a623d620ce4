"""The usable-core count: affinity, capped by a cgroup v2 or v1 CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.cores import cpu_quota, usable_cores

AFFINITY = len(os.sched_getaffinity(0))


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_cpu_quota_reads_cgroup_v2_then_v1(tmp_path: Path, files: dict[str, str], quota: float | None) -> None:
    assert cpu_quota(write(tmp_path, files)) == quota


def test_usable_cores_is_the_affinity_capped_by_the_quota_rounded_up(tmp_path: Path) -> None:
    assert usable_cores(write(tmp_path / "none", {})) == AFFINITY
    assert usable_cores(write(tmp_path / "half", {"cpu.max": "50000 100000"})) == 1
    assert usable_cores(write(tmp_path / "huge", {"cpu.max": f"{(AFFINITY + 8) * 100000} 100000"})) == AFFINITY
    if AFFINITY >= 2:
        assert usable_cores(write(tmp_path / "one-and-a-bit", {"cpu.max": "110000 100000"})) == 2
