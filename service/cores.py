"""How many cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a container's CPU limit).

``os.cpu_count()`` and the affinity both see every core of the node inside a container limited to 2 CPUs; sizing
workers or thread pools from them would start one process per node core.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    cores = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup_root)
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time per period the cgroup allows (cgroup v2 ``cpu.max``, else v1 CFS files); None: no limit."""
    try:
        limit, period = (root / "cpu.max").read_text().split()[:2]
        return None if limit == "max" else _ratio(int(limit), int(period))
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        return _ratio(quota, int((root / "cpu" / "cpu.cfs_period_us").read_text()))
    except (OSError, ValueError):
        return None


def _ratio(quota: int, period: int) -> float | None:
    return quota / period if quota > 0 and period > 0 else None
