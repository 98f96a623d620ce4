"""The native load generator for both APIs: Debian's ``h2load`` (nghttp2-client), HTTP/2 for gRPC and ``--h1`` for
REST, one thread, a closed loop of ``connections`` × ``streams`` requests outstanding for a fixed time.

h2load sends one body over and over. A gRPC body is the serialized ``ModelInferRequest`` framed as gRPC frames it
(``0x00``, a 4-byte big-endian length, the message) and sent with ``content-type: application/grpc`` and
``te: trailers``. h2load counts an HTTP 200 as a success, but gRPC puts its status in the trailers, which h2load
does not read: the caller subtracts the RPCs the server itself counted as failed (``bench.counters``) and checks
one real answer with a gRPC client before loading. Latency percentiles come from h2load's per-request log.
"""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.load import LoadResult

GRPC_HEADERS: tuple[str, ...] = ("content-type: application/grpc", "te: trailers")
JSON_HEADERS: tuple[str, ...] = ("content-type: application/json",)
REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout")  # fmt: skip
STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
FINISHED = re.compile(r"finished in ([\d.]+)(m?s)")


@dataclass(frozen=True)
class H2Plan:
    url: str
    body: Path
    headers: Sequence[str]
    connections: int
    streams: int = 1  # concurrent streams per connection (HTTP/2 only)
    duration_s: int = 8
    h1: bool = False


def ensure_h2load() -> str:
    """The path of ``h2load``, installed from Debian's ``nghttp2-client`` first when it is missing."""
    found = shutil.which("h2load")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nghttp2-client"]):
        subprocess.run([*sudo, *command], check=True, capture_output=True, timeout=600)
    found = shutil.which("h2load")
    if not found:
        raise RuntimeError("h2load is not on the PATH after installing nghttp2-client")
    return found


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: not compressed, then the length (4 bytes, big-endian)."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def command(plan: H2Plan, log: Path) -> list[str]:
    args = ["h2load", "-t", "1", "-c", str(plan.connections), "-D", str(plan.duration_s), f"--log-file={log}"]
    args += ["--h1"] if plan.h1 else ["-m", str(plan.streams)]
    for header in plan.headers:
        args += ["-H", header]
    return [*args, "-d", str(plan.body), plan.url]


def run_h2load(plan: H2Plan, timeout_s: int = 60) -> LoadResult:
    """One timed run. ``ok`` counts HTTP 200 answers (for gRPC: before the caller takes away failed statuses)."""
    with tempfile.TemporaryDirectory(prefix="h2load-") as folder:
        log = Path(folder) / "requests.log"
        before = cpu_of_children()
        limit = plan.duration_s + timeout_s
        done = subprocess.run(command(plan, log), capture_output=True, text=True, timeout=limit, check=False)
        client_cpu_s = cpu_of_children() - before
        if done.returncode != 0 or REQUESTS.search(done.stdout) is None:
            raise RuntimeError(f"h2load failed ({done.returncode}): {(done.stderr or done.stdout)[-500:]}")
        statuses, micros = read_log(log.read_text() if log.exists() else "")
    return result(plan, done.stdout, statuses, micros, client_cpu_s)


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_log(text: str) -> tuple[np.ndarray, np.ndarray]:
    """h2load's per-request log: start (µs since the epoch), HTTP status, duration (µs), tab-separated."""
    rows = [line.split("\t") for line in text.splitlines() if line.strip()]
    statuses = np.array([int(row[1]) for row in rows], dtype=np.int64)
    micros = np.array([int(row[2]) for row in rows], dtype=np.float64)
    return statuses, micros


def result(plan: H2Plan, stdout: str, statuses: np.ndarray, micros: np.ndarray, client_cpu_s: float) -> LoadResult:
    """A ``LoadResult`` (wrk's shape, so the tables are shared) from h2load's summary and its per-request log."""
    counts = REQUESTS.search(stdout)
    assert counts is not None
    failed, errored, timeout = (int(counts[i]) for i in (5, 6, 7))
    finished = FINISHED.search(stdout)
    span = float(finished[1]) / (1000.0 if finished[2] == "ms" else 1.0) if finished else float(plan.duration_s)
    ok = int((statuses == 200).sum())
    not_ok = len(statuses) - ok
    latencies = micros[statuses == 200] / 1000.0

    def percentile(q: float) -> float:
        return float(np.percentile(latencies, q)) if len(latencies) else float("nan")

    detail = {"status": not_ok, "connect": errored, "read": failed, "write": 0, "timeout": timeout}
    return LoadResult(
        connections=plan.connections * plan.streams,
        requests=len(statuses),
        duration_s=span,
        requests_per_s=len(statuses) / span,
        ok_requests_per_s=ok / span,
        p50_ms=percentile(50),
        p90_ms=percentile(90),
        p99_ms=percentile(99),
        max_ms=float(latencies.max()) if len(latencies) else float("nan"),
        errors=sum(detail.values()),
        error_detail=detail,
        client_cpu_s=client_cpu_s,
    )


def without_failed_rpcs(run: LoadResult, failed: int) -> LoadResult:
    """The run with ``failed`` of its HTTP 200 answers moved to errors: RPCs whose gRPC status was not OK."""
    if failed <= 0:
        return run
    ok = max(run.ok_requests_per_s * run.duration_s - failed, 0.0)
    detail = {**run.error_detail, "status": run.error_detail["status"] + failed}
    return dataclasses.replace(
        run, ok_requests_per_s=ok / run.duration_s, errors=run.errors + failed, error_detail=detail
    )
