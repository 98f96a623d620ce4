"""Measuring many servers at many load points, interleaved so that drift on a shared machine hits all alike."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.counters import Counters, scrape
from bench.load import LoadResult, run_wrk
from bench.report import HttpSummary, summarise_http
from bench.servers import RunningServer

Point = tuple[int, int]  # (sequences per request, concurrency)
Measured = tuple[LoadResult, float, Counters]  # one wrk run, the server's CPU seconds, the service's counters


@dataclass(frozen=True)
class LoadPlan:
    bodies: dict[int, Path]  # sequences per request -> file of request bodies
    script: Path
    points: Sequence[Point]
    rounds: int
    duration_s: int
    timeout_s: int = 10


def numbers(text: str) -> list[int]:
    """A command-line list of integers: ``"1,32,128"`` -> [1, 32, 128]."""
    return [int(part) for part in text.split(",") if part.strip()]


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure_point(server: RunningServer, plan: LoadPlan, point: Point) -> Measured:
    """One wrk run, with the server's CPU time and (for the service) its own counters over the run."""
    per_request, connections = point
    url = server.metrics_url
    counters_before = scrape(url) if url else Counters()
    cpu_before = server.cpu_seconds()
    result = run_wrk(server.url, plan.script, plan.bodies[per_request], connections, plan.duration_s, plan.timeout_s)
    cpu = server.cpu_seconds() - cpu_before
    counters = (scrape(url) - counters_before) if url else Counters()
    return result, cpu, counters


def warm_up(running: Sequence[RunningServer], plan: LoadPlan) -> None:
    """Two seconds at 8 connections with the largest requests: connections, thread pools, ONNX Runtime shapes."""
    largest = max(plan.bodies)
    for server in running:
        run_wrk(server.url, plan.script, plan.bodies[largest], 8, 2, plan.timeout_s)


def measure_matrix(running: Sequence[RunningServer], plan: LoadPlan) -> dict[str, dict[Point, HttpSummary]]:
    """Every point on every server: per point, the servers take turns, in reversed order every other round."""
    warm_up(running, plan)
    summaries: dict[str, dict[Point, HttpSummary]] = {s.spec.label: {} for s in running}
    for point in plan.points:
        per_request, connections = point
        collected: dict[str, list[Measured]] = {s.spec.label: [] for s in running}
        for round_ in range(plan.rounds):
            for server in running if round_ % 2 == 0 else list(reversed(running)):
                measured = measure_point(server, plan, point)
                collected[server.spec.label].append(measured)
                result = measured[0]
                progress(
                    f"{server.spec.label[:34]:>34} c={connections:<3} n={per_request:<2} "
                    f"{result.ok_requests_per_s * per_request:8,.0f} seq/s  p99 {result.p99_ms:8.2f} ms  "
                    f"errors {result.errors}"
                )
        for label, runs in collected.items():
            results, cpu, counters = [m[0] for m in runs], [m[1] for m in runs], [m[2] for m in runs]
            summaries[label][point] = summarise_http(label, per_request, results, cpu, counters)
    return summaries
