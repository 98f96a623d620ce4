"""The size ladder: the bundled model, a mid-size and a BERT-base-sized transformer, at 16, 128 and 512 tokens, side by
side in one run — raw ONNX Runtime on the graph as tf2onnx wrote it, raw on the lean graph (fused kernels; and its
INT8 twin), the service's default path, the service asked for every attention map, and the naive endpoint; with the
service's idle and peak memory.

    python bench/sizes.py --out DIR [--sizes bundled,mid,base] [--lengths 16,128,512] [--duration 6] [--quick]

Models are built from random weights and imported as a user imports them (``bench/ladder.py``; nothing downloaded),
once, into ``DIR/repository``. Texts of exactly T tokens are made from each model's own vocabulary. Raw: batch 8 (what
c=8 batches into) and batch 1, the service's session options, every core. Over HTTP (``wrk -t1``, one text per
request): the service with its defaults at c=8 and c=1, the service with ``"attention": "all"`` at c=1 (or its
largest map the explanation budget allows: the last layer's), and the naive FastAPI + ONNX Runtime endpoint at c=8.
Resident memory is the server's, its workers summed: after warm-up (idle) and the largest seen while loaded (peak).
Before each HTTP run, as many requests as its connections go at once and are waited for (``settle``): the run starts
warm, on an idle server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import ladder, servers
from bench.harness import numbers
from bench.load import run_wrk, write_script
from model_format.document import load_tokenizer, read_document, read_spec

BUNDLED = servers.ROOT / "models"
BATCH = 8


@dataclass
class Point:
    """One size at one length: every measurement, and the ratios the issue asks for."""

    size: str
    tokens: int
    raw: dict[str, float] = field(default_factory=dict)  # "<graph> b<batch>": sequences per second
    http: dict[str, dict[str, float]] = field(default_factory=dict)  # label: req/s, p99 ms, errors, bytes
    memory: dict[str, float] = field(default_factory=dict)  # idle / peak MiB


def texts_of(folder: Path, tokens: int, count: int = 64, seed: int = 0) -> list[str]:
    """``count`` texts of exactly ``tokens`` tokens (specials included) under the folder's own tokenizer."""
    spec = read_spec(read_document(folder), folder.parent.name, int(folder.name))
    tokenizer = load_tokenizer(folder, spec, np.dtype(np.int64))
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    words = [w for w in vocab if w.isalpha() and w.islower() and len(w) >= 2][:5000]
    rng, texts = np.random.default_rng(seed), []
    while len(texts) < count:
        chosen = list(rng.choice(words, size=tokens))
        while chosen:
            length = len(tokenizer.encode([" ".join(chosen)])[0].ids)
            if length == tokens:
                texts.append(" ".join(chosen))
                break
            if length > tokens:
                chosen = chosen[: len(chosen) - max(1, (length - tokens) // 2)]
            else:
                chosen.append(str(rng.choice(words)))
    return texts


def graphs(folder: Path) -> dict[str, Path]:
    """The folder's graphs by label: as tf2onnx wrote it, lean, and lean INT8 where they exist."""
    document = read_document(folder)
    found = {"tf2onnx": folder / document["files"]["model"]}
    if document["files"].get("lean"):
        found["lean"] = folder / document["files"]["lean"]
    twin = document.get("variants", {}).get("int8", {}).get("lean")
    if twin:
        found["lean int8"] = folder / twin["file"]
    return found


def raw_rate(path: Path, folder: Path, texts: list[str], batch: int, seconds: float) -> float:
    """Sequences per second of ``session.run`` on padded batches of ``texts``, every core, the service's options."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = read_spec(read_document(folder), folder.parent.name, int(folder.name))
    tokenizer = load_tokenizer(folder, spec, np.dtype(np.int32))
    rows = [e.ids for e in tokenizer.encode(texts[:batch])]
    ids = np.stack(rows).astype(np.int32)
    feed = {
        name: (ids if name == spec.signature.token_ids else np.ones_like(ids)) for name in spec.signature.input_names
    }
    if spec.signature.segments:
        feed[spec.signature.segments] = np.zeros_like(ids)
    outputs = [spec.signature.outputs[r] for r in ("probabilities", "attention") if r in spec.signature.outputs]
    session.run(outputs, feed)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or calls < 2:
        session.run(outputs, feed)
        calls += 1
    return calls * batch / (time.perf_counter() - started)


@contextmanager
def sampling(server: servers.RunningServer, peak: list[int]) -> Iterator[None]:
    """Record the server's largest resident memory while the block runs."""
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], servers.resident_bytes(server))
            done.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def bodies(path: Path, texts: list[str], parameters: dict[str, object] | None = None) -> Path:
    lines = [json.dumps({"instances": [t], **({"parameters": parameters} if parameters else {})}) for t in texts]
    path.write_text("\n".join(lines) + "\n")
    return path


def http(
    server: servers.RunningServer,
    out: Path,
    name: str,
    texts: list[str],
    connections: int,
    seconds: int,
    parameters: dict[str, object] | None = None,
) -> dict[str, float]:
    script, body_path = write_script(out), bodies(out / f"{name}.jsonl", texts, parameters)
    settle(server.url, body_path, connections)
    result = run_wrk(server.url, script, body_path, connections, seconds, 60)
    return {"rps": round(result.ok_requests_per_s, 2), "p99_ms": round(result.p99_ms, 1), "errors": result.errors}


def settle(url: str, body_path: Path, connections: int) -> None:
    """Before a measured run: ``connections`` requests at once, each waited for. They warm the shape, and they queue
    behind whatever the previous run left in flight (wrk stops without waiting for its answers: at 512 tokens on a
    BERT-base model that backlog is seconds of compute), so the run starts on an idle server."""
    body = body_path.read_text().splitlines()[0].encode()

    def post(_: int) -> None:
        request = urllib.request.Request(url, body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(post, range(connections)))


def measure(size: str, folder: Path, lengths: list[int], seconds: int, out: Path) -> list[Point]:
    points = []
    limit = read_spec(read_document(folder), folder.parent.name, int(folder.name)).max_length
    for tokens in [t for t in lengths if t <= limit]:
        texts = texts_of(folder, tokens)
        point = Point(size, tokens)
        for label, path in graphs(folder).items():
            for batch in (BATCH, 1):
                point.raw[f"{label} b{batch}"] = round(raw_rate(path, folder, texts, batch, seconds / 2), 2)
        points.append(point)
        print(json.dumps(asdict(point)), flush=True)
    _over_http(size, folder, points, seconds, out)
    return points


def _over_http(size: str, folder: Path, points: list[Point], seconds: int, out: Path) -> None:
    repository, model = folder.parents[1], folder.parent.name
    spec = servers.service_spec(f"service {size}", repository=repository, model=model, settings={"models": model})
    with servers.running([spec], out) as (service,):
        idle, peak = servers.resident_bytes(service), [0]
        idle_worker = max(servers.worker_resident_bytes(service))
        with sampling(service, peak):
            for point in points:
                texts = texts_of(folder, point.tokens)
                point.http["service c8"] = http(service, out, "c8", texts, 8, seconds)
                point.http["service c1"] = http(service, out, "c1", texts, 1, seconds)
                point.http["service all c1"] = http(service, out, "all", texts, 1, seconds, _all(folder, point.tokens))
        for point in points:
            point.memory = {
                "idle_mib": round(idle / 2**20),
                "idle_worker_mib": round(idle_worker / 2**20),
                "model_file_mib": round(graphs(folder)["tf2onnx"].stat().st_size / 2**20),
                "peak_mib": round(peak[0] / 2**20),
            }
    naive = servers.naive_spec(f"naive {size}", model_dir=folder, model=model)
    with servers.running([naive], out) as (baseline,):
        for point in points:
            point.http["naive c8"] = http(baseline, out, "naive", texts_of(folder, point.tokens), 8, seconds)
            print(json.dumps(asdict(point)), flush=True)


def _all(folder: Path, tokens: int) -> dict[str, object]:
    """Every attention output, or the last layer's maps where all of them are over the explanation budget."""
    spec = read_spec(read_document(folder), folder.parent.name, int(folder.name))
    layers, heads = spec.layers_heads or (1, 1)
    if layers * heads * tokens * tokens + 3 * tokens > 4 << 20:
        return {"attention": "all", "layers": [-1]}
    return {"attention": "all"}


def table(points: list[Point]) -> str:
    head = (
        "| size | T | raw tf2onnx b8 | raw lean b8 | lean / tf2onnx | lean INT8 / tf2onnx | service c=8 | "
        "service c=8 / raw lean b8 | service c=1 p99 ms | raw lean b1 | service all c=1: req/s, p99 ms | naive c=8 | "
        "service / naive | idle MiB (server; a worker; model.onnx) | peak MiB |"
    )
    lines = [head, "|" + "---|" * 15]
    for p in points:
        raw, h, m = p.raw, p.http, p.memory
        tf2onnx, lean = raw["tf2onnx b8"], raw.get("lean b8", raw["tf2onnx b8"])
        service, naive = h.get("service c8", {}).get("rps", 0.0), h.get("naive c8", {}).get("rps", 0.0)
        explained = h.get("service all c1", {})
        cells = [
            p.size, str(p.tokens), f"{tf2onnx:.1f}", f"{lean:.1f}", f"{lean / tf2onnx:.2f}x",
            f"{raw.get('lean int8 b8', 0) / tf2onnx:.2f}x", f"{service:.1f}", f"{service / lean:.2f}x",
            str(h.get("service c1", {}).get("p99_ms", 0)), f"{raw.get('lean b1', raw['tf2onnx b1']):.1f}",
            f"{explained.get('rps', 0)}, {explained.get('p99_ms', 0)}", f"{naive:.1f}",
            f"{service / naive:.2f}x" if naive else "-",
            f"{m.get('idle_mib', 0)}; {m.get('idle_worker_mib', 0)}; {m.get('model_file_mib', 0)}",
            str(m.get("peak_mib", 0)),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default="bundled,mid,base")
    parser.add_argument("--lengths", type=numbers, default=[16, 128, 512])
    parser.add_argument("--duration", type=int, default=6, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="harness check: 1 s per point, bundled only")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.duration = "bundled", 1
    args.out.mkdir(parents=True, exist_ok=True)
    points: list[Point] = []
    for size in args.sizes.split(","):
        folder = BUNDLED / "sentiment" / "1" if size == "bundled" else imported(size, args.out)
        points += measure(size, folder, args.lengths, args.duration, args.out)
    (args.out / "sizes.json").write_text(json.dumps([asdict(p) for p in points], indent=2) + "\n")
    (args.out / "sizes.md").write_text(table(points) + "\n")
    print(table(points))
    return 0


def imported(size: str, out: Path) -> Path:
    """The size's model imported into ``out/repository`` (built and imported once)."""
    existing = sorted((out / "repository" / size).glob("[0-9]*"), key=lambda p: int(p.name))
    if existing:
        return existing[-1]
    model, _ = ladder.build(size, out)
    folder, seconds, peak = ladder.measure_import(model, out / "repository", size, variants="int8")
    print(json.dumps({"imported": size, "seconds": round(seconds, 1), "peak_rss_gib": round(peak, 2)}), flush=True)
    return folder


if __name__ == "__main__":
    raise SystemExit(main())
