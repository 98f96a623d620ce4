"""In-process cost of one request, stage by stage, without HTTP or a load generator (quiet and repeatable).

Stages call the service's own functions on the bundled model in this process: JSON decode, request decoding,
tokenization + validation, the data plane (batcher hop + ONNX Runtime + result shaping), response encoding.
The whole ASGI app is then called directly (no socket, no uvicorn), one request at a time and with 32
concurrent callers. Run as a script it prints JSON.

    python bench/stages.py [--naive] [--seconds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the bench package from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import uvloop
from fastapi import FastAPI

from bench.corpus import build_bodies, load_samples

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models" / "sentiment" / "1"
PATH = "/v1/models/sentiment:predict"


@dataclass(frozen=True)
class StageTime:
    """Per call: the fastest wall time of the batches (least disturbed by other load) and the median CPU time of
    the whole process (every thread: event loop, inference threads, ONNX Runtime's pool, the tokenizer's)."""

    stage: str
    wall_us: float
    cpu_us: float


@dataclass(frozen=True)
class InProcessRate:
    callers: int
    requests_per_s: float
    cpu_us_per_request: float


async def timed(stage: str, call: Callable[[], Any], seconds: float, batch: int = 20) -> StageTime:
    """Time ``call()`` (awaited when it returns an awaitable) in batches of ``batch`` for about ``seconds``."""
    walls: list[float] = []
    cpus: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(walls) < 5:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(batch):
            result = call()
            if isinstance(result, Awaitable):
                await result
        cpus.append((time.process_time() - cpu) / batch * 1e6)
        walls.append((time.perf_counter() - wall) / batch * 1e6)
    return StageTime(stage, min(walls), statistics.median(cpus))


def scope_of(body: bytes) -> dict[str, Any]:
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": PATH, "raw_path": PATH.encode(), "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip


async def call_app(app: FastAPI, body: bytes) -> int:
    """One request straight through the ASGI app; returns the status."""
    delivered = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope_of(body), receive, send)
    return status


async def throughput(app: FastAPI, bodies: Sequence[bytes], callers: int, seconds: float) -> InProcessRate:
    """Requests per second, and process CPU per request, with ``callers`` concurrent in-process clients."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        nonlocal done
        index = offset
        while time.perf_counter() < deadline:
            status = await call_app(app, bodies[index % len(bodies)])
            if status != 200:
                raise RuntimeError(f"status {status}")
            index += callers
            done += 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(i) for i in range(callers)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return InProcessRate(callers, done / elapsed, cpu / done * 1e6)


async def stage_times(app: FastAPI, body: bytes, seconds: float) -> list[StageTime]:
    from service.batching import pad
    from service.protocols import codec, native
    from service.sequences import ItemLimits, prepare

    state = app.state.core
    served = state.repository.get("sentiment")
    parsed = codec.parse_json(body)
    request, _ = native.decode_request(parsed, "sentiment", None)
    texts = [item for item in request.items if isinstance(item, str)]
    result = await state.dataplane.infer(request)
    limits = ItemLimits(state.dataplane.limits.max_instances, state.dataplane.limits.max_text_chars)

    def tokenize_and_check() -> Any:  # the data plane's first step
        return prepare(request.items, request.source, request.truncate, served.folder, limits)

    ids = [s.ids for s in tokenize_and_check()]
    padded, mask = pad(ids, served.folder.spec.pad_id)
    model = served.folder.model

    def encode() -> Any:
        content = {"predictions": [native.encode_prediction(p, result.labels) for p in result.predictions]}
        return codec.json_response(content, headers={"X-Model-Version": "1"})

    stages: list[tuple[str, Callable[[], Any]]] = [
        ("JSON decode (codec.parse_json)", lambda: codec.parse_json(body)),
        ("request decoding (native.decode_request)", lambda: native.decode_request(parsed, "sentiment", None)),
        ("tokenization (tokenizer.encode)", lambda: served.folder.tokenizer.encode(texts)),
        ("tokenize + validate (sequences.prepare)", tokenize_and_check),
        ("padding (batching.pad)", lambda: pad(ids, served.folder.spec.pad_id)),
        ("ONNX Runtime alone (model.predict)", lambda: model.predict(padded, mask, ("probabilities", "attention"))),
        ("data plane: submit, batch, ORT, shape (infer)", lambda: state.dataplane.infer(request)),
        ("response encoding (encode_prediction + orjson)", encode),
        ("whole ASGI request, no socket", lambda: call_app(app, body)),
    ]
    return [await timed(name, call, seconds) for name, call in stages]


async def measure(bodies: dict[int, list[bytes]], seconds: float, naive: bool) -> dict[str, Any]:
    """Stage times per request size and in-process rates, for the service app (or the naive app)."""
    if naive:
        from bench.naive_server import create_app as create_naive_app

        app = create_naive_app(MODEL_DIR, "fp32", 0)
    else:
        from service.app import create_app
        from service.settings import Settings

        settings = Settings(model_repository=ROOT / "models", poll_interval_s=0, log_level="warning", grpc_port=0)
        app = create_app(settings)
    report: dict[str, Any] = {"stages": {}, "in_process": {}}
    async with app.router.lifespan_context(app):
        for per_request, group in bodies.items():
            if not naive:
                times = await stage_times(app, group[0], seconds)
                report["stages"][per_request] = [dataclasses.asdict(t) for t in times]
            rates = [await throughput(app, group, callers, seconds * 2) for callers in (1, 32)]
            report["in_process"][per_request] = [dataclasses.asdict(r) for r in rates]
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-stage and in-process costs of a request (JSON on stdout).")
    parser.add_argument("--naive", action="store_true", help="measure the naive app instead (in-process rates)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per stage measurement")
    parser.add_argument("--per-request", default="1,16", help="sequences per request, e.g. 1,16")
    args = parser.parse_args(argv)
    samples = load_samples(MODEL_DIR / "tokenizer.json", 512)
    sizes = [int(n) for n in args.per_request.split(",")]
    bodies = {n: build_bodies(samples, n) for n in sizes}
    report = uvloop.run(measure(bodies, args.seconds, args.naive))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
