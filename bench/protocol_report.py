"""The gRPC-vs-REST table and its targets (bench/protocols.py), from the summaries of the runs."""

from __future__ import annotations

from bench.report import HttpSummary, Target, markdown_table, ratio

PROTOCOLS = ("native REST", "v2 REST", "gRPC")
Point = tuple[int, int]  # connections, streams per connection
Key = tuple[str, int, Point, str]  # inputs, sequences per call, point, API
Summaries = dict[Key, HttpSummary]
HEADERS = [
    "inputs", "seq/call", "conn × streams", "native REST req/s (p99 ms)", "v2 REST req/s (p99 ms)",
    "gRPC req/s (p99 ms)", "gRPC / native", "gRPC / gRPC c×1", "server CPU ms/call N / V / G",
    "mean batch N / V / G", "errors N / V / G",
]  # fmt: skip


def cases(summaries: Summaries) -> list[tuple[str, int]]:
    return list(dict.fromkeys((k[0], k[1]) for k in summaries))


def points(summaries: Summaries) -> list[Point]:
    """c × 1 points by concurrency, then the multiplexed ones."""
    found = dict.fromkeys(k[2] for k in summaries)
    return sorted(found, key=lambda p: (p[1] > 1, p[0] * p[1], p))


def cell(summary: HttpSummary | None) -> str:
    return f"{summary.requests_per_s:,.0f} ({summary.p99_ms:.2f})" if summary else "—"


def per_call(summary: HttpSummary | None, what: str) -> str:
    if summary is None:
        return "—"
    if what == "cpu":
        return f"{summary.server_cpu_ms_per_sequence * summary.per_request:.2f}"
    if what == "batch":
        batch = summary.counters.get("mean_batch_size")
        return f"{batch:.1f}" if batch else "-"
    return str(summary.errors)


def table(summaries: Summaries) -> str:
    rows = []
    for inputs, n in cases(summaries):
        for point in points(summaries):
            cells = [summaries.get((inputs, n, point, p)) for p in PROTOCOLS]
            if cells[2] is None:
                continue
            native, grpc = cells[0], cells[2]
            flat = summaries.get((inputs, n, (point[0] * point[1], 1), "gRPC")) if point[1] > 1 else None
            rows.append([
                inputs, n, f"{point[0]} × {point[1]}", *(cell(s) for s in cells),
                ratio(grpc.requests_per_s, native.requests_per_s) if native else "—",
                ratio(grpc.requests_per_s, flat.requests_per_s) if flat else "—",
                *(" / ".join(per_call(s, what) for s in cells) for what in ("cpu", "batch", "errors")),
            ])  # fmt: skip
    return markdown_table(HEADERS, rows)


def findings(summaries: Summaries) -> list[Target]:
    """The issue's targets, for every input kind measured: gRPC against native REST JSON at c=32 (1 and 16
    sequences per call), multiplexed streams against as many connections, and p99 at c=1."""
    found: list[Target] = []

    def compare(name: str, a: Key, b: Key, goal: float, higher: bool, p99: bool = False) -> None:
        if a not in summaries or b not in summaries:
            return
        first, second = summaries[a], summaries[b]
        value = first.p99_ms / second.p99_ms if p99 else first.requests_per_s / second.requests_per_s
        passed = value >= goal if higher else value <= goal
        found.append(Target(name, f"{value:.2f}×", f"{'≥' if higher else '≤'} {goal}×", passed))

    for inputs, n in cases(summaries):
        goal = 1.2 if n >= 16 else 1.0
        name = f"gRPC / native REST req/s, {inputs}, {n} seq/call, c=32"
        compare(name, (inputs, n, (32, 1), "gRPC"), (inputs, n, (32, 1), "native REST"), goal, True)
        for point in points(summaries):
            if point[1] > 1:
                flat = (point[0] * point[1], 1)
                name = f"gRPC {point[0]}×{point[1]} / gRPC {flat[0]}×1 req/s, {inputs}, {n} seq/call"
                compare(name, (inputs, n, point, "gRPC"), (inputs, n, flat, "gRPC"), 0.9, True)
        name = f"gRPC p99 / native REST p99, {inputs}, {n} seq/call, c=1"
        compare(name, (inputs, n, (1, 1), "gRPC"), (inputs, n, (1, 1), "native REST"), 1.0, False, p99=True)
    return found
