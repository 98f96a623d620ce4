"""Summaries of repeated runs, markdown tables, and the issue's targets with PASS/MISS."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.counters import Counters
from bench.load import LoadResult
from bench.raw import RawResult


@dataclass(frozen=True)
class HttpSummary:
    """Medians over the rounds of one (server, sequences per request, concurrency) cell; errors are summed.

    Rates count successful requests only. ``counters`` (the service's own metrics, summed over the rounds) hold
    outcomes, mean batch size, mean compute ms per batch and mean queue wait per sequence.
    """

    server: str
    per_request: int
    connections: int
    rounds: int
    requests_per_s: float
    sequences_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    error_detail: dict[str, int]
    server_cpu_ms_per_sequence: float
    wrk_cpu_cores: float
    counters: dict[str, float]


@dataclass(frozen=True)
class RawSummary:
    variant: str
    batch_size: int
    outputs: tuple[str, ...]
    rounds: int
    sequences_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    goal: str
    passed: bool


def summarise_http(
    server: str,
    per_request: int,
    results: Sequence[LoadResult],
    cpu_s: Sequence[float],
    counters: Sequence[Counters] = (),
) -> HttpSummary:
    sequences = sum(r.ok_requests_per_s * r.duration_s for r in results) * per_request
    total = sum(counters, Counters())
    detail = {key: sum(r.error_detail[key] for r in results) for key in results[0].error_detail}
    return HttpSummary(
        server=server,
        per_request=per_request,
        connections=results[0].connections,
        rounds=len(results),
        requests_per_s=statistics.median(r.ok_requests_per_s for r in results),
        sequences_per_s=statistics.median(r.ok_requests_per_s * per_request for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
        error_detail=detail,
        server_cpu_ms_per_sequence=1000.0 * sum(cpu_s) / sequences if sequences else float("nan"),
        wrk_cpu_cores=sum(r.client_cpu_s for r in results) / sum(r.duration_s for r in results),
        counters=total.summary() if total.values else {},
    )


def summarise_raw(variant: str, results: Sequence[RawResult]) -> RawSummary:
    """The best round: a ceiling is what the session was seen to reach; a slow round is the machine's noise.

    Taking the best makes every ratio to it stricter (a higher ceiling, and that round's own latencies)."""
    best = max(results, key=lambda r: r.sequences_per_s)
    return RawSummary(
        variant=variant,
        batch_size=best.batch_size,
        outputs=best.outputs,
        rounds=len(results),
        sequences_per_s=best.sequences_per_s,
        latency_p50_ms=best.latency_p50_ms,
        latency_p99_ms=best.latency_p99_ms,
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def raw_table(raws: Sequence[RawSummary]) -> str:
    rows = [
        (r.variant, r.batch_size, "+".join(r.outputs), r.sequences_per_s, r.latency_p50_ms, r.latency_p99_ms)
        for r in raws
    ]
    return markdown_table(["variant", "batch", "outputs", "seq/s", "call p50 ms", "call p99 ms"], rows)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def http_table(pairs: Sequence[tuple[HttpSummary, HttpSummary | None]], ceiling: float) -> str:
    """One row per (sequences per request, concurrency): the service, the baseline, and the ratios."""
    rows = []
    for svc, naive in pairs:
        batch = svc.counters.get("mean_batch_size")
        row: list[object] = [svc.per_request, svc.connections, svc.requests_per_s, svc.sequences_per_s]
        row += [svc.p50_ms, svc.p99_ms, svc.errors, f"{batch:.1f}" if batch else "-", svc.server_cpu_ms_per_sequence]
        if naive is not None:
            row += [naive.sequences_per_s, naive.p50_ms, naive.p99_ms, naive.errors, naive.server_cpu_ms_per_sequence]
            row += [ratio(svc.sequences_per_s, naive.sequences_per_s)]
        else:
            row += ["-"] * 6
        row += [ratio(svc.sequences_per_s, ceiling)]
        rows.append(row)
    headers = [
        "seq/req", "conc", "svc req/s", "svc seq/s", "svc p50 ms", "svc p99 ms", "svc err", "svc batch",
        "svc CPU ms/seq", "naive seq/s", "naive p50 ms", "naive p99 ms", "naive err", "naive CPU ms/seq",
        "svc/naive", "svc/ceiling(b32)",
    ]  # fmt: skip
    return markdown_table(headers, rows)


def targets(
    service: dict[tuple[int, int], HttpSummary],
    naive: dict[tuple[int, int], HttpSummary],
    raw_b1: RawSummary,
    raw_b32: RawSummary,
) -> list[Target]:
    """The issue's targets, judged on one sequence per request (errors at 128: every request size)."""
    found: list[Target] = []
    svc32 = service.get((1, 32))
    if svc32 is not None:
        share = svc32.sequences_per_s / raw_b32.sequences_per_s
        found.append(
            Target(
                "throughput vs raw batched ceiling (c=32, 1 seq/req)",
                f"{svc32.sequences_per_s:,.0f} / {raw_b32.sequences_per_s:,.0f} seq/s = {share:.0%}",
                ">= 75%",
                share >= 0.75,
            )
        )
        naive32 = naive.get((1, 32))
        if naive32 is not None:
            times = svc32.sequences_per_s / naive32.sequences_per_s
            found.append(
                Target(
                    "throughput vs naive endpoint (c=32, 1 seq/req)",
                    f"{svc32.sequences_per_s:,.0f} / {naive32.sequences_per_s:,.0f} seq/s = {times:.2f}×",
                    ">= 1.5×",
                    times >= 1.5,
                )
            )
    svc1 = service.get((1, 1))
    if svc1 is not None:
        gap = svc1.p99_ms - raw_b1.latency_p99_ms
        found.append(
            Target(
                "p99 at c=1 vs raw batch-1 p99",
                f"{svc1.p99_ms:.2f} - {raw_b1.latency_p99_ms:.2f} ms = {gap:+.2f} ms "
                f"(vs raw p50 {raw_b1.latency_p50_ms:.2f} ms: {svc1.p99_ms - raw_b1.latency_p50_ms:+.2f} ms)",
                "<= 2 ms",
                gap <= 2.0,
            )
        )
    for (per_request, connections), summary in sorted(service.items()):
        if connections == 128:
            found.append(
                Target(
                    f"errors at c=128, {per_request} seq/req",
                    f"{summary.errors} errors",
                    "0",
                    summary.errors == 0,
                )
            )
    return found


def targets_table(found: Sequence[Target]) -> str:
    rows = [(t.name, t.measured, t.goal, "PASS" if t.passed else "MISS") for t in found]
    return markdown_table(["target", "measured", "goal", "result"], rows).replace("---:", "---")
