"""Soak: hold load on the service for a while, dropping a new model version in every minute; report the damage.

    python bench/soak.py --duration 600 --concurrency 64 --reload-every 60 --out bench/results/soak
    python bench/soak.py --protocol grpc ...      # the same over gRPC (ModelInfer, bench/grpc_load.py)

A copy of the bundled model is served from a scratch repository. wrk keeps ``--concurrency`` connections busy
for ``--duration`` seconds; every ``--reload-every`` seconds the next version is written beside the serving one
(staging folder, then rename, as the exporter does) and the one before is deleted, so the server loads, swaps
and unloads under load. The report: requests sent, succeeded and failed, latency percentiles, the server's own
outcome counts, versions served, errors in its log, and its resident memory after warm-up and at the end.
Not part of the test suite (it takes minutes); exit status 1 when a request failed or memory grew 10% or more.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import counters, servers
from bench.corpus import Sample, build_bodies, load_samples, write_bodies
from bench.grpc_load import GrpcPlan, run_grpc, write_requests
from bench.harness import progress
from bench.load import LoadResult, run_wrk, write_script
from bench.oip import grpc_message

MODEL = servers.ROOT / "models" / "sentiment" / "1"
GROWTH_LIMIT = 0.10


@dataclass
class Reload:
    at_s: float
    added: int
    removed: int | None
    serving_after_s: float | None
    rss_mib: float


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--duration", type=int, default=600, help="seconds of load (default 600)")
    parser.add_argument("--concurrency", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--reload-every", type=float, default=60.0, help="seconds between new versions (default 60)")
    parser.add_argument("--warmup", type=int, default=20, help="seconds of load before memory is first read")
    parser.add_argument("--per-request", type=int, default=1, help="sequences per request")
    parser.add_argument("--workers", type=int, default=0, help="server processes (0: the service's default)")
    parser.add_argument("--protocol", choices=["rest", "grpc"], default="rest",
                        help="rest: wrk on the native API; grpc: bench/grpc_load.py on ModelInfer")  # fmt: skip
    parser.add_argument("--grpc-processes", type=int, default=2, help="gRPC load generator processes")
    parser.add_argument("--out", type=Path, help="folder for the report, the bodies and the server log")
    return parser.parse_args(argv)


def rss_mib(server: servers.RunningServer) -> float:
    """Resident memory of the server and its worker processes, in MiB."""
    total = 0
    for pid in [server.process.pid, *servers._children(server.process.pid)]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return total / 1024


def add_version(repository: Path, version: int) -> None:
    staging = repository / "sentiment" / f".staging-{version}"
    shutil.copytree(MODEL, staging)
    staging.rename(repository / "sentiment" / str(version))


def serving_version(server: servers.RunningServer) -> int | None:
    url = f"http://127.0.0.1:{server.port}/v1/models/sentiment"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            statuses = json.load(response)["model_version_status"]
    except OSError:
        return None
    available = [int(s["version"]) for s in statuses if s["state"] == "AVAILABLE"]
    return max(available, default=None)


def wait_serving(server: servers.RunningServer, version: int, limit_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if serving_version(server) == version:
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def reload_loop(server: servers.RunningServer, repository: Path, args: argparse.Namespace, stop: threading.Event,
                reloads: list[Reload]) -> None:  # fmt: skip
    started, version = time.monotonic(), 1
    while not stop.wait(args.reload_every):
        version += 1
        add_version(repository, version)
        removed = version - 2 if version > 2 else None
        serving_after = wait_serving(server, version, args.reload_every / 2)
        if removed is not None:
            shutil.rmtree(repository / "sentiment" / str(removed))
        reloads.append(Reload(round(time.monotonic() - started, 1), version, removed, serving_after, rss_mib(server)))
        progress(f"version {version} serving after {serving_after}s; rss {reloads[-1].rss_mib:.1f} MiB")


def load_runner(args: argparse.Namespace, server: servers.RunningServer, grpc_port: int, samples: list[Sample],
                work: Path) -> Callable[[float, float], LoadResult]:  # fmt: skip
    """(duration, per-request timeout) -> one run at ``--concurrency``, over REST (wrk) or gRPC."""
    texts = [s.text for s in samples]
    if args.protocol == "grpc":
        batches = [
            texts[i : i + args.per_request] for i in range(0, len(texts) - args.per_request + 1, args.per_request)
        ]
        requests = write_requests([grpc_message(batch) for batch in batches], work / "requests.bin")
        address = f"127.0.0.1:{grpc_port}"
        return lambda duration, timeout: run_grpc(
            GrpcPlan(address, requests, args.concurrency, duration, args.grpc_processes, timeout_s=timeout)
        )
    bodies = write_bodies(build_bodies(samples, args.per_request), work / "bodies.jsonl")
    script = write_script(work)
    return lambda duration, timeout: run_wrk(server.url, script, bodies, args.concurrency, int(duration), timeout)


def log_errors(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if '"level":"error"' in line]


def report(load: LoadResult, outcomes: dict[str, float], reloads: list[Reload], memory: tuple[float, float],
           errors: list[str], args: argparse.Namespace) -> dict[str, object]:  # fmt: skip
    failed = load.errors
    start, end = memory
    return {
        "duration_s": round(load.duration_s, 1),
        "concurrency": args.concurrency,
        "protocol": args.protocol,
        "requests_sent": load.requests + sum(load.error_detail[k] for k in ("connect", "write", "timeout")),
        "requests_succeeded": load.requests - load.error_detail["status"],
        "requests_failed": failed,
        "failures": load.error_detail,
        "requests_per_s": round(load.ok_requests_per_s, 1),
        "latency_ms": {"p50": load.p50_ms, "p90": load.p90_ms, "p99": load.p99_ms, "max": load.max_ms},
        "server_outcomes": outcomes,
        "reloads": [asdict(r) for r in reloads],
        "rss_mib": {"after_warmup": round(start, 1), "end": round(end, 1), "growth": round(end / start - 1, 4)},
        "server_log_errors": errors[:20],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.out or Path(f"/tmp/attention-serve-soak-{int(time.time())}")
    work.mkdir(parents=True, exist_ok=True)
    repository = work / "repository"
    shutil.rmtree(repository, ignore_errors=True)
    (repository / "sentiment").mkdir(parents=True)
    add_version(repository, 1)
    samples = load_samples(MODEL / "tokenizer.json", 2048)
    grpc_port = servers.free_port()
    settings = {"poll_interval_s": "1", "workers": str(args.workers), "grpc_port": str(grpc_port)}
    spec = servers.service_spec("service soak", settings=settings)
    spec = servers.ServerSpec(
        spec.label, tuple(str(repository) if p == "models" else p for p in spec.command), spec.env
    )
    server = servers.start(spec, work)
    try:
        load = load_runner(args, server, grpc_port, samples, work)
        progress(f"warming up for {args.warmup}s")
        load(args.warmup, 10)
        rss_start, before = rss_mib(server), counters.scrape(server.metrics_url or "")
        progress(f"rss after warm-up {rss_start:.1f} MiB; {args.duration}s of load at concurrency {args.concurrency}")
        stop, reloads = threading.Event(), []
        reloader = threading.Thread(target=reload_loop, args=(server, repository, args, stop, reloads), daemon=True)
        reloader.start()
        result = load(args.duration, 30)
        stop.set()
        reloader.join(timeout=args.reload_every)
        rss_end = rss_mib(server)
        outcomes = (counters.scrape(server.metrics_url or "") - before).summary()
    finally:
        servers.stop(server)
    summary = report(result, outcomes, reloads, (rss_start, rss_end), log_errors(server.log), args)
    (work / "soak.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    ok = summary["requests_failed"] == 0 and rss_end / rss_start - 1 < GROWTH_LIMIT
    progress(f"{'PASS' if ok else 'FAIL'}: report in {work / 'soak.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
