"""Where gRPC runs, side by side: one server per ``GRPC_SERVER`` value (the native front the workers share, a Python
front process per worker, a thread of the worker, the HTTP server's loop), all up at once, loaded in turn with the
same ModelInfer body by h2load; native REST on each as the yardstick.

    python bench/grpc_modes.py [--workers 2] [--modes native,process,thread,loop] [--points 32x1,4x8,1x1]
                               [--duration 6] [--rounds 3] [--out DIR]

Within a point the servers take turns, in reversed order every other round; medians. One sequence (64 token ids)
per call, the APIs' default outputs, other settings at their defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import machine, oip, servers
from bench.corpus import load_samples
from bench.h2load import ensure_h2load, grpc_frame
from bench.harness import progress
from bench.protocols import MODEL_DIR, Case, Measure, Measured, check_answers, loader, shape
from bench.report import HttpSummary, markdown_table, summarise_http


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", default="native,process,thread,loop")
    parser.add_argument("--points", default="32x1,4x8,1x1", help="CONNECTIONSxSTREAMS,... (REST: the x1 ones)")
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.modes = args.modes.split(",")
    args.points = [shape(p) for p in args.points.split(",")]
    return args


def one_sequence(work: Path) -> Case:
    ids = oip.id_rows(load_samples(MODEL_DIR / "tokenizer.json", 64, 64), 1, 64)
    bodies = oip.bodies(ids)
    files = {"native REST": work / "native.json", "v2 REST": work / "v2.json", "gRPC": work / "grpc.bin"}
    files["native REST"].write_bytes(bodies.native)
    files["v2 REST"].write_bytes(bodies.v2)
    files["gRPC"].write_bytes(grpc_frame(bodies.grpc))
    return Case("ids", 1, files)


Key = tuple[str, str, str]  # mode, "connections × streams", API


def measure_modes(measures: dict[str, Measure], case: Case, args: argparse.Namespace) -> dict[Key, HttpSummary]:
    for measure in measures.values():  # warm-up: connections, thread pools, ONNX Runtime shapes
        for api in ("gRPC", "native REST"):
            measure(api, case, (8, 1), 2)
    summaries: dict[Key, HttpSummary] = {}
    for point in args.points:
        for api in ("gRPC", "native REST") if point[1] == 1 else ("gRPC",):
            runs: dict[str, list[Measured]] = {mode: [] for mode in measures}
            for round_ in range(args.rounds):
                for mode in args.modes if round_ % 2 == 0 else list(reversed(args.modes)):
                    runs[mode].append(measures[mode](api, case, point, args.duration))
                    run = runs[mode][-1][0]
                    where = f"{mode:>8} {api:>11} {point[0]}x{point[1]:<3}"
                    progress(f"{where} {run.ok_requests_per_s:8,.0f} req/s  p99 {run.p99_ms:8.2f} ms")
            for mode, measured in runs.items():
                results, cpu, counters = [m[0] for m in measured], [m[1] for m in measured], [m[2] for m in measured]
                summaries[(mode, f"{point[0]} × {point[1]}", api)] = summarise_http(mode, 1, results, cpu, counters)
    return summaries


def cell(summary: HttpSummary) -> str:
    batch, cpu = summary.counters.get("mean_batch_size", 0.0), summary.server_cpu_ms_per_sequence
    return f"{summary.requests_per_s:,.0f} ({summary.p99_ms:.2f}) · {cpu:.2f} · {batch:.1f}"


def table(summaries: dict[Key, HttpSummary], modes: Sequence[str]) -> str:
    rows = [
        [point, api, *(cell(summaries[(mode, point, api)]) for mode in modes)]
        for point, api in dict.fromkeys((k[1], k[2]) for k in summaries)
    ]
    headers = ["conn × streams", "API", *(f"{m}: req/s (p99 ms) · CPU ms/call · batch" for m in modes)]
    return markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_h2load()
    work = args.out or Path(tempfile.mkdtemp(prefix="attention-serve-grpc-modes-"))
    work.mkdir(parents=True, exist_ok=True)
    info, case = machine.facts(), one_sequence(work)
    ports = {mode: servers.free_port() for mode in args.modes}
    specs = [
        servers.service_spec(mode, settings={"grpc_server": mode, "workers": str(args.workers), "grpc_port": str(port)})
        for mode, port in ports.items()
    ]
    with servers.running(specs, work) as running:
        for server, port in zip(running, ports.values(), strict=True):
            check_answers(server, f"127.0.0.1:{port}", case)
        measures = {s.spec.label: loader(s, ports[s.spec.label]) for s in running}
        summaries = measure_modes(measures, case, args)
    info["load_average_at_end"] = machine.load_average()
    method = (
        f"{args.workers} worker(s) per server; {args.rounds} round(s) of {args.duration} s per point, the servers "
        "taking turns (order reversed every other round); medians. One sequence of 64 token ids per call."
    )
    markdown = "\n\n".join(["## Where gRPC runs", machine.facts_markdown(info), method, table(summaries, args.modes)])
    print(markdown)
    if args.out:
        document = [{"mode": k[0], "point": k[1], "api": k[2], **vars(s)} for k, s in summaries.items()]
        (work / "results.json").write_text(json.dumps({"machine": info, "summaries": document}, indent=2))
        (work / "results.md").write_text(markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
