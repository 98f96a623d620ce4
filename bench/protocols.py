"""gRPC against REST on one server in one run: the Open Inference Protocol as REST JSON, REST with binary tensors
(Triton's extension) and gRPC, with the same texts and the same outputs (label, probabilities, attention, lengths).

    python bench/protocols.py [--quick] [--duration 10] [--rounds 2] [--concurrency 1,32,128] [--per-request 1,16]
                              [--grpc-processes 2] [--grpc-channels 4] [--setting NAME=VALUE] [--out DIR]

REST is loaded by ``wrk -t1``, gRPC by ``bench/grpc_load.py`` (processes of ``grpc.aio``; ghz is not available).
Within a point the three take turns, in reversed order every other round. Each row reports the server's CPU per
sequence and the load generator's own CPU (cores busy), since on a small machine the client shares the cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tritonclient.grpc import service_pb2 as pb

from bench import machine, servers
from bench.corpus import Sample, load_samples, token_stats, write_bodies
from bench.counters import Counters, scrape
from bench.grpc_load import GrpcPlan, run_grpc, write_requests
from bench.harness import numbers, progress
from bench.load import LoadResult, run_wrk, write_binary_bodies, write_binary_script, write_script
from bench.report import HttpSummary, summarise_http

MODEL_DIR = servers.ROOT / "models" / "sentiment" / "1"
INFER_PATH = "/v2/models/sentiment/infer"
PROTOCOLS = ("REST JSON", "REST binary", "gRPC")
Runner = Callable[[int, int], LoadResult]  # (sequences per request, concurrency) -> one run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="harness check: 2 s per point, one round")
    parser.add_argument("--duration", type=int, help="seconds per run (default 10; quick: 2)")
    parser.add_argument("--rounds", type=int, help="repetitions per point (default 2; quick: 1)")
    parser.add_argument("--concurrency", type=numbers, default=[1, 32, 128])
    parser.add_argument("--per-request", type=numbers, default=[1, 16])
    parser.add_argument("--grpc-processes", type=int, default=2, help="load generator processes for gRPC")
    parser.add_argument("--grpc-channels", type=int, default=4, help="connections per gRPC load process")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE", help="a service setting")
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, help="folder for results.json, results.md, bodies and the server log")
    args = parser.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 10)
    args.rounds = args.rounds or (1 if args.quick else 2)
    return args


def texts_of(samples: list[Sample], per_request: int) -> list[list[str]]:
    texts = [s.text for s in samples]
    return [texts[i : i + per_request] for i in range(0, len(texts) - len(texts) % per_request, per_request)]


def json_body(texts: list[str]) -> bytes:
    return orjson.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]})


def length_prefixed(texts: list[str]) -> bytes:
    return b"".join(len(t.encode()).to_bytes(4, "little") + t.encode() for t in texts)


def binary_body(texts: list[str]) -> tuple[int, bytes]:
    data = length_prefixed(texts)
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "parameters": {"binary_data_size": len(data)}}
    header = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    return len(header), header + data


def grpc_message(texts: list[str]) -> bytes:
    request = pb.ModelInferRequest(model_name="sentiment")
    request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(length_prefixed(texts))
    return bytes(request.SerializeToString())


def runners(server: servers.RunningServer, grpc_port: int, samples: list[Sample], args: argparse.Namespace,
            work: Path) -> dict[str, Runner]:  # fmt: skip
    """One way to load the server per protocol, each with its request bodies written once."""
    url = f"http://127.0.0.1:{server.port}{INFER_PATH}"
    json_script, binary_script = write_script(work), write_binary_script(work)
    json_files, binary_files, grpc_files = {}, {}, {}
    for n in args.per_request:
        batches = texts_of(samples, n)
        json_files[n] = write_bodies([json_body(t) for t in batches], work / f"v2-json-{n}.jsonl")
        binary_files[n] = write_binary_bodies([binary_body(t) for t in batches], work / f"v2-binary-{n}.bin")
        grpc_files[n] = write_requests([grpc_message(t) for t in batches], work / f"grpc-{n}.bin")

    def grpc(n: int, c: int) -> LoadResult:
        plan = GrpcPlan(f"127.0.0.1:{grpc_port}", grpc_files[n], c, args.duration, args.grpc_processes,
                        args.grpc_channels)  # fmt: skip
        return run_grpc(plan)

    return {
        "REST JSON": lambda n, c: run_wrk(url, json_script, json_files[n], c, args.duration),
        "REST binary": lambda n, c: run_wrk(url, binary_script, binary_files[n], c, args.duration),
        "gRPC": grpc,
    }


def measure(server: servers.RunningServer, run: Runner, n: int, c: int) -> tuple[LoadResult, float, Counters]:
    metrics = server.metrics_url or ""
    counters, cpu = scrape(metrics), server.cpu_seconds()
    result = run(n, c)
    return result, server.cpu_seconds() - cpu, scrape(metrics) - counters


def measure_all(server: servers.RunningServer, ways: dict[str, Runner], args: argparse.Namespace
                ) -> dict[str, dict[tuple[int, int], HttpSummary]]:  # fmt: skip
    for run in ways.values():  # warm-up: connections, thread pools, ONNX Runtime shapes
        run(max(args.per_request), 8)
    summaries: dict[str, dict[tuple[int, int], HttpSummary]] = {name: {} for name in ways}
    for c in args.concurrency:
        for n in args.per_request:
            runs: dict[str, list[tuple[LoadResult, float, Counters]]] = {name: [] for name in ways}
            for round_ in range(args.rounds):
                for name in PROTOCOLS if round_ % 2 == 0 else tuple(reversed(PROTOCOLS)):
                    runs[name].append(measure(server, ways[name], n, c))
                    result = runs[name][-1][0]
                    progress(f"{name:>11} c={c:<3} n={n:<2} {result.ok_requests_per_s * n:8,.0f} seq/s  "
                             f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}  "
                             f"client {result.client_cpu_s / result.duration_s:.2f} cores")  # fmt: skip
            for name, measured in runs.items():
                summaries[name][(n, c)] = summarise_http(
                    name, n, [m[0] for m in measured], [m[1] for m in measured], [m[2] for m in measured]
                )
    return summaries


def table(summaries: dict[str, dict[tuple[int, int], HttpSummary]]) -> str:
    head = [
        "| seq/request | c | REST JSON seq/s (p99 ms) | REST binary seq/s (p99 ms) | gRPC seq/s (p99 ms) "
        "| gRPC / JSON | gRPC / binary | server CPU ms/seq J / B / G | client cores J / B / G | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for point in sorted(summaries["gRPC"], key=lambda p: (p[0], p[1])):
        cells = [summaries[name][point] for name in PROTOCOLS]
        json_, binary, grpc = cells
        rows.append(
            f"| {point[0]} | {point[1]} | "
            + " | ".join(f"{s.sequences_per_s:,.0f} ({s.p99_ms:.2f})" for s in cells)
            + f" | {grpc.sequences_per_s / json_.sequences_per_s:.2f}x"
            + f" | {grpc.sequences_per_s / binary.sequences_per_s:.2f}x"
            + " | " + " / ".join(f"{s.server_cpu_ms_per_sequence:.3f}" for s in cells)
            + " | " + " / ".join(f"{s.wrk_cpu_cores:.2f}" for s in cells)
            + " | " + " / ".join(str(s.errors) for s in cells) + " |"
        )  # fmt: skip
    return "\n".join(head + rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="attention-serve-protocols-"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine.facts()
    samples = load_samples(MODEL_DIR / "tokenizer.json", args.texts, args.max_tokens)
    grpc_port = servers.free_port()
    settings = {"grpc_port": str(grpc_port), **dict(item.split("=", 1) for item in args.setting)}
    with servers.running([servers.service_spec("service", settings=settings)], work) as (server,):
        ways = runners(server, grpc_port, samples, args, work)
        summaries = measure_all(server, ways, args)
    info["load_average_at_end"] = machine.load_average()
    method = (
        f"{args.rounds} round(s) of {args.duration} s per point, the protocols taking turns (order reversed every "
        f"other round); medians. REST: wrk -t1. gRPC: {args.grpc_processes} grpc.aio processes x "
        f"{args.grpc_channels} channels. Texts: {token_stats(samples)}. Settings: "
        f"{', '.join(args.setting) or 'defaults'}. The load generators share the cores with the server."
    )
    markdown = "\n\n".join(["## gRPC vs REST", machine.facts_markdown(info), method, table(summaries)])
    print(markdown)
    ratios = [
        summaries["gRPC"][p].sequences_per_s / summaries["REST JSON"][p].sequences_per_s for p in summaries["gRPC"]
    ]
    progress(f"gRPC / REST JSON, median over the points: {statistics.median(ratios):.2f}x")
    if args.out:
        document = {label: [vars(s) for s in cells.values()] for label, cells in summaries.items()}
        (work / "results.json").write_text(json.dumps({"machine": info, "summaries": document}, indent=2))
        (work / "results.md").write_text(markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
