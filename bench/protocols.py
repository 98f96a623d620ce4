"""gRPC against REST on one server in one run, every API loaded by the same native generator (``h2load``): the
native REST API and the Open Inference Protocol's v2 REST API (JSON, ``h2load --h1``) and gRPC ``ModelInfer``
(binary tensors, HTTP/2), with texts or token ids, one or several sequences per call.

    python bench/protocols.py [--quick] [--duration 8] [--rounds 2] [--concurrency 1,32,128] [--multiplexed 4x8]
                              [--per-request 1,16] [--inputs ids,text] [--setting NAME=VALUE] [--out DIR] [--strict]

Each point is ``connections`` × ``streams`` calls outstanding: c × 1 for every API, and for gRPC also few
connections each carrying several streams (``--multiplexed``), as gRPC clients connect. Within a point the APIs
take turns, in reversed order every other round; the table gives medians. h2load counts HTTP 200 answers; gRPC's
own status (in the trailers) is checked by one real call per body before loading and by the server's counters
during it (RPCs it did not answer OK are errors, not throughput). h2load comes from Debian's nghttp2-client.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import grpc
from tritonclient.grpc import service_pb2 as pb

from bench import machine, oip, servers
from bench.corpus import load_samples, token_stats
from bench.counters import Counters, scrape
from bench.h2load import GRPC_HEADERS, JSON_HEADERS, H2Plan, ensure_h2load, grpc_frame, run_h2load, without_failed_rpcs
from bench.harness import numbers, progress
from bench.load import LoadResult
from bench.protocol_report import PROTOCOLS, Point, Summaries, findings, table
from bench.report import summarise_http, targets_table

MODEL_DIR = servers.ROOT / "models" / "sentiment" / "1"
GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"
PATHS = {"native REST": "/v1/models/sentiment:predict", "v2 REST": "/v2/models/sentiment/infer"}
NOT_FAILURES = ("outcome_success", "outcome_cancelled")  # cancelled: calls in flight when h2load stopped
Measured = tuple[LoadResult, float, Counters]


def shape(text: str) -> tuple[int, int]:
    connections, _, streams = text.partition("x")
    return int(connections), int(streams or 1)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="harness check: 2 s per point, one round, c=1,32, ids")
    parser.add_argument("--duration", type=int, help="seconds per run (default 8; quick: 2)")
    parser.add_argument("--rounds", type=int, help="repetitions per point (default 2; quick: 1)")
    parser.add_argument("--concurrency", type=numbers, help="connections, one call each (default 1,32,128)")
    parser.add_argument("--multiplexed", default="4x8", help="gRPC only: CONNECTIONSxSTREAMS,... (default 4x8)")
    parser.add_argument("--per-request", type=numbers, default=[1, 16], help="sequences per call (default 1,16)")
    parser.add_argument("--inputs", default=None, help="ids,text (default both; quick: ids)")
    parser.add_argument("--ids-length", type=int, default=64, help="token ids per sequence (default 64)")
    parser.add_argument("--attention", help='attention outputs asked for besides the defaults, e.g. "all"')
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE", help="a service setting")
    parser.add_argument("--out", type=Path, help="folder for results.json, results.md, bodies and the server log")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when a target is missed")
    args = parser.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 8)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.concurrency = args.concurrency or ([1, 32] if args.quick else [1, 32, 128])
    args.inputs = (args.inputs or ("ids" if args.quick else "ids,text")).split(",")
    args.multiplexed = [shape(s) for s in args.multiplexed.split(",") if s.strip()]
    return args


@dataclass(frozen=True)
class Case:
    """One request body per API: an input kind, sequences per call, and the files h2load sends."""

    inputs: str
    per_request: int
    files: dict[str, Path]


def write_cases(args: argparse.Namespace, work: Path) -> tuple[list[Case], dict[str, float]]:
    """The bodies of every case, and the token counts of the texts the text cases send."""
    samples = load_samples(MODEL_DIR / "tokenizer.json", 2048, 64)
    cases = []
    for kind in args.inputs:
        for n in args.per_request:
            items: oip.Items = (
                oip.id_rows(samples, n, args.ids_length) if kind == "ids" else [s.text for s in samples[:n]]
            )
            bodies = oip.bodies(items, args.attention)
            files = {"native REST": work / f"native-{kind}-{n}.json", "v2 REST": work / f"v2-{kind}-{n}.json"}
            files["gRPC"] = work / f"grpc-{kind}-{n}.bin"
            files["native REST"].write_bytes(bodies.native)
            files["v2 REST"].write_bytes(bodies.v2)
            files["gRPC"].write_bytes(grpc_frame(bodies.grpc))
            cases.append(Case(kind, n, files))
    return cases, token_stats(samples[: max(args.per_request)])


def check_answers(server: servers.RunningServer, grpc_address: str, case: Case) -> None:
    """One real call per API with this case's body: REST answers 200 with predictions, gRPC status OK with outputs."""
    for name, path in PATHS.items():
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", case.files[name].read_bytes(),
                                         {"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        if not answer.get("predictions" if name == "native REST" else "outputs"):
            raise RuntimeError(f"{name} answered without predictions: {str(answer)[:300]}")
    with grpc.insecure_channel(grpc_address) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, pb.ModelInferResponse] = channel.unary_unary(
            GRPC_METHOD, response_deserializer=pb.ModelInferResponse.FromString
        )
        reply = call(case.files["gRPC"].read_bytes()[5:], timeout=30)
    if len(reply.raw_output_contents) != len(reply.outputs) or "probabilities" not in [o.name for o in reply.outputs]:
        raise RuntimeError(f"gRPC answered without its outputs: {reply}")


Measure = Callable[[str, Case, Point, int], Measured]  # (API, body, connections x streams, seconds) -> one run


def loader(server: servers.RunningServer, grpc_port: int) -> Measure:
    def measure(protocol: str, case: Case, point: Point, duration_s: int) -> Measured:
        url, headers = f"http://127.0.0.1:{server.port}{PATHS.get(protocol, '')}", JSON_HEADERS
        if protocol == "gRPC":
            url, headers = f"http://127.0.0.1:{grpc_port}{GRPC_METHOD}", GRPC_HEADERS
        plan = H2Plan(url, case.files[protocol], headers, *point, duration_s, h1=protocol != "gRPC")
        metrics = server.metrics_url or ""
        counters, cpu = scrape(metrics), server.cpu_seconds()
        run = run_h2load(plan)
        cpu, counters = server.cpu_seconds() - cpu, scrape(metrics) - counters
        failed = sum(v for k, v in counters.values.items() if k.startswith("outcome_") and k not in NOT_FAILURES)
        return without_failed_rpcs(run, int(failed)) if protocol == "gRPC" else run, cpu, counters

    return measure


def points_of(args: argparse.Namespace) -> list[tuple[Point, tuple[str, ...]]]:
    """Every load shape and the APIs measured at it: c × 1 for all, the multiplexed shapes for gRPC only."""
    shapes = [((c, 1), PROTOCOLS) for c in args.concurrency]
    return shapes + [(point, ("gRPC",)) for point in args.multiplexed]


def measure_point(measure: Measure, case: Case, point: Point, protocols: Sequence[str], args: argparse.Namespace
                  ) -> dict[str, list[Measured]]:  # fmt: skip
    """Every API at one point, ``rounds`` times, taking turns (in reversed order every other round)."""
    runs: dict[str, list[Measured]] = {p: [] for p in protocols}
    for round_ in range(args.rounds):
        for protocol in protocols if round_ % 2 == 0 else list(reversed(protocols)):
            runs[protocol].append(measure(protocol, case, point, args.duration))
            run = runs[protocol][-1][0]
            where = f"{protocol:>11} {case.inputs:>4} n={case.per_request:<2} {point[0]}x{point[1]:<3}"
            progress(f"{where} {run.ok_requests_per_s:8,.0f} req/s  p99 {run.p99_ms:8.2f} ms  errors {run.errors}")
    return runs


def measure_all(measure: Measure, cases: list[Case], args: argparse.Namespace) -> Summaries:
    summaries: Summaries = {}
    for case in cases:
        for protocol in PROTOCOLS:  # warm-up: connections, thread pools, ONNX Runtime shapes
            measure(protocol, case, (8, 1), 2)
        for point, protocols in points_of(args):
            for protocol, measured in measure_point(measure, case, point, protocols, args).items():
                results, cpu, counters = [m[0] for m in measured], [m[1] for m in measured], [m[2] for m in measured]
                summary = summarise_http(protocol, case.per_request, results, cpu, counters)
                summaries[(case.inputs, case.per_request, point, protocol)] = summary
    return summaries


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_h2load()
    work = args.out or Path(tempfile.mkdtemp(prefix="attention-serve-protocols-"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine.facts()
    cases, text_tokens = write_cases(args, work)
    grpc_port = servers.free_port()
    settings = {"grpc_port": str(grpc_port), **dict(item.split("=", 1) for item in args.setting)}
    with servers.running([servers.service_spec("service", settings=settings)], work) as (server,):
        for case in cases:
            check_answers(server, f"127.0.0.1:{grpc_port}", case)
        summaries = measure_all(loader(server, grpc_port), cases, args)
    info["load_average_at_end"] = machine.load_average()
    method = (
        f"h2load -t1 for every API (REST: --h1; gRPC: HTTP/2), {args.rounds} round(s) of {args.duration} s per "
        f"point, the APIs taking turns (order reversed every other round); medians. ids: {args.ids_length} real "
        f"token ids per sequence; text: the first corpus texts ({text_tokens}). Attention asked for: "
        f"{args.attention or 'the defaults'}. Settings: "
        f"{', '.join(args.setting) or 'defaults'}. The load generator shares the cores with the server."
    )
    found = findings(summaries)
    markdown = "\n\n".join(["## gRPC vs REST (h2load)", machine.facts_markdown(info), method, table(summaries),
                            targets_table(found)])  # fmt: skip
    print(markdown)
    if args.out:
        document = [{"inputs": k[0], "per_request": k[1], "point": k[2], **vars(s)} for k, s in summaries.items()]
        results = {"machine": info, "summaries": document, "targets": [vars(t) for t in found]}
        (work / "results.json").write_text(json.dumps(results, indent=2))
        (work / "results.md").write_text(markdown + "\n")
    return 1 if args.strict and not all(t.passed for t in found) else 0


if __name__ == "__main__":
    sys.exit(main())
