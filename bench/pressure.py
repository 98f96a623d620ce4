"""Pressure at real size: explanation requests at the budget beside ordinary traffic, for minutes; report the damage.

    python bench/pressure.py --out DIR [--size base] [--duration 180] [--explainers 8] [--tokens 512]

The model is the size ladder's (``bench/ladder.py``: built from random weights, imported once into
``DIR/repository``). The service runs with its defaults. For ``--duration`` seconds:

- ``--explainers`` clients each send, one after the other, the largest explanation the budget allows for one text
  of ``--tokens`` tokens (every map of the last layers that fit ``MAX_EXPLANATION_VALUES``, plus the per-token
  outputs and occlusion where it fits the occlusion limit);
- wrk keeps ``--ordinary`` connections busy with ordinary requests (one text of 16-128 tokens, default outputs);
- a prober, a process of its own, asks ``/v2/health/ready`` and ``/metrics`` every 0.25 s, with a 5 s timeout.

The report: ordinary requests sent, failed, p50/p99; explanations answered, failed, their sizes; the probes' slowest
answers and failures; worker processes that died (process ids that disappeared); resident memory after warm-up,
the largest seen, and the mean of the first and of the last minute (flat: within 10 %). Exit status 1 when an
ordinary request failed, a probe took 1 s or more, or a worker died.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import servers, sizes
from bench.load import run_wrk, write_script
from model_format.document import read_document, read_spec

PROBE_EVERY_S = 0.25
PROBE_LIMIT_S = 1.0
BUDGET = 4 << 20  # MAX_EXPLANATION_VALUES' default


@dataclass
class Report:
    size: str
    duration_s: int
    ordinary: dict[str, float] = field(default_factory=dict)
    explanations: dict[str, object] = field(default_factory=dict)
    probes: dict[str, float] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)
    memory_mib: dict[str, float] = field(default_factory=dict)


def explanation(folder: Path, tokens: int) -> dict[str, object]:
    """The parameters of the largest explanation of one ``tokens``-token text the default budget allows."""
    spec = read_spec(read_document(folder), folder.parent.name, int(folder.name))
    layers, heads = spec.layers_heads or (1, 1)
    per_layer = heads * tokens * tokens
    fit = max(1, min(layers, (BUDGET - 3 * tokens) // per_layer))  # 3 per-token outputs beside the maps
    parameters: dict[str, object] = {"attention": "all", "layers": list(range(-fit, 0))}
    if tokens <= 256:
        parameters["explain"] = "occlusion"
    return parameters


def explain_loop(url: str, bodies: list[bytes], stop: threading.Event, seen: dict[str, list[float]]) -> None:
    with httpx.Client(timeout=120, headers={"Content-Type": "application/json"}) as client:
        index = 0
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = client.post(url, content=bodies[index % len(bodies)])
                key = "ok" if response.status_code == 200 else f"status {response.status_code}"
                seen.setdefault("bytes", []).append(len(response.content))
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            seen.setdefault(key, []).append(time.perf_counter() - started)
            index += 1


def probe_loop(base: str, stop: threading.Event, seen: dict[str, list[float]]) -> None:
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            for path in ("/v2/health/ready", "/metrics"):
                started = time.perf_counter()
                try:
                    ok = client.get(base + path).status_code == 200
                except httpx.HTTPError:
                    ok = False
                seen.setdefault(path if ok else f"{path} failed", []).append(time.perf_counter() - started)
            stop.wait(PROBE_EVERY_S)


def probe_process(base: str, stop: Any, out: Path) -> None:
    """``probe_loop`` in a process of its own (its clock not held up by the explainers' reading of their answers
    under this process's GIL); the latencies land in ``out`` as JSON."""
    seen: dict[str, list[float]] = {}
    probe_loop(base, stop, seen)
    out.write_text(json.dumps(seen))


def memory_loop(server: servers.RunningServer, stop: threading.Event, samples: list[tuple[float, int]]) -> None:
    started = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - started, servers.resident_bytes(server)))
        stop.wait(1.0)


def run(folder: Path, size: str, args: argparse.Namespace) -> Report:
    repository, model = folder.parents[1], folder.parent.name
    spec = servers.service_spec(f"pressure {size}", repository=repository, model=model, settings={"models": model})
    tokens = min(args.tokens, read_spec(read_document(folder), model, int(folder.name)).max_length)
    parameters = explanation(folder, tokens)
    bodies = [
        json.dumps({"instances": [t], "parameters": parameters}).encode() for t in sizes.texts_of(folder, tokens, 8)
    ]
    ordinary = [t for n in (16, 32, 64, min(128, tokens)) for t in sizes.texts_of(folder, n, count=16)]
    explained: dict[str, list[float]] = {}
    probes: dict[str, list[float]] = {}
    samples: list[tuple[float, int]] = []
    with servers.running([spec], args.out) as (server,):
        workers, idle, stop = servers.worker_pids(server), servers.resident_bytes(server), threading.Event()
        base = f"http://127.0.0.1:{server.port}"
        threads = [threading.Thread(target=explain_loop, args=(server.url, bodies, stop, explained), daemon=True)
                   for _ in range(args.explainers)]  # fmt: skip
        threads.append(threading.Thread(target=memory_loop, args=(server, stop, samples), daemon=True))
        spawn = multiprocessing.get_context("spawn")
        probing = spawn.Event()
        prober = spawn.Process(target=probe_process, args=(base, probing, args.out / "probes.json"), daemon=True)
        prober.start()
        for thread in threads:
            thread.start()
        load = run_wrk(server.url, write_script(args.out), sizes.bodies(args.out / "ordinary.jsonl", ordinary),
                       args.ordinary, args.duration, 60)  # fmt: skip
        stop.set()
        probing.set()
        for thread in threads:
            thread.join(timeout=150)
        prober.join(timeout=30)
        probes.update(json.loads((args.out / "probes.json").read_text()))
        died = len(workers - servers.worker_pids(server))
        log_deaths = server.log.read_text(errors="replace").count("died")
    report = Report(size, args.duration)
    report.ordinary = {
        "requests": load.requests, "failed": load.errors, "rps": round(load.ok_requests_per_s, 2),
        "p50_ms": round(load.p50_ms, 1), "p99_ms": round(load.p99_ms, 1), "max_ms": round(load.max_ms, 1),
    }  # fmt: skip
    report.explanations = summary(parameters, explained)
    report.probes = {key: round(max(values), 3) for key, values in probes.items() if not key.endswith("failed")}
    report.probes["failed"] = sum(len(v) for k, v in probes.items() if k.endswith("failed"))
    report.workers = {"before": len(workers), "died": died, "log_deaths": log_deaths}
    report.memory_mib = memory(idle, samples)
    return report


def summary(parameters: dict[str, object], explained: dict[str, list[float]]) -> dict[str, object]:
    answered = explained.get("ok", [])
    failures = {key: len(values) for key, values in explained.items() if key not in ("ok", "bytes")}
    return {
        "parameters": parameters, "answered": len(answered), "failed": sum(failures.values()), "failures": failures,
        "p50_s": round(float(np.median(answered)), 2) if answered else 0.0,
        "max_s": round(max(answered), 2) if answered else 0.0,
        "answer_mb": round(float(np.mean(explained.get("bytes", [0]))) / 1e6, 1),
    }  # fmt: skip


def memory(idle: int, samples: list[tuple[float, int]]) -> dict[str, float]:
    """Resident MiB: after warm-up, the largest seen, and the means of the first and the last minute."""
    end = samples[-1][0] if samples else 0.0
    first = [b for t, b in samples if t < 60] or [0]
    last = [b for t, b in samples if t >= end - 60] or [0]
    return {
        "idle": round(idle / 2**20),
        "peak": round(max((b for _, b in samples), default=0) / 2**20),
        "first_minute": round(float(np.mean(first)) / 2**20),
        "last_minute": round(float(np.mean(last)) / 2**20),
    }


def failed(report: Report) -> bool:
    slowest = max((v for k, v in report.probes.items() if k.startswith("/")), default=0.0)
    return bool(report.ordinary["failed"] or report.probes["failed"] or slowest >= PROBE_LIMIT_S
                or report.workers["died"] or report.workers["log_deaths"])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", default="base", help="bundled, or a size of bench/ladder.py")
    parser.add_argument("--duration", type=int, default=180, help="seconds of load")
    parser.add_argument("--explainers", type=int, default=8, help="clients sending explanations at the budget")
    parser.add_argument("--ordinary", type=int, default=4, help="wrk connections sending ordinary requests")
    parser.add_argument("--tokens", type=int, default=512, help="tokens of each explained text")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = sizes.BUNDLED / "sentiment" / "1" if args.size == "bundled" else sizes.imported(args.size, args.out)
    report = run(folder, args.size, args)
    (args.out / "pressure.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(json.dumps(asdict(report), indent=2))
    return 1 if failed(report) else 0


if __name__ == "__main__":
    raise SystemExit(main())
