"""Extra comparisons: ONNX Runtime options in-process, and service settings (and what-ifs) over HTTP.

    python bench/compare.py [--quick] [--only raw|http] [--duration 10] [--rounds 2] [--points 1x1,1x32,16x32]
                            [--out DIR]

Raw: every case against the default session (fp32, probabilities + attention, all graph optimizations,
intra-op threads = cores), at batch 1 and 32, cases interleaved round by round. HTTP: one server per case, all
started up front, taking turns at each load point (order reversed every other round). A point ``NxC`` is N
sequences per request at C connections. See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the bench package from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import machine, servers
from bench.corpus import Sample, build_bodies, load_samples, write_bodies
from bench.harness import LoadPlan, Point, measure_matrix, progress
from bench.load import write_script
from bench.raw import ALL_OUTPUTS, DEFAULT_OUTPUTS, RawResult, SessionConfig, make_batches, make_session, measure
from bench.report import HttpSummary, markdown_table, ratio

MODEL_DIR = servers.ROOT / "models" / "sentiment" / "1"
RawCase = tuple[str, SessionConfig, tuple[str, ...]]


def raw_cases(cores: int, model_dir: Path) -> list[RawCase]:
    """The default session, every graph variant the version has, and each session option changed alone."""
    default = SessionConfig(intra_op_threads=cores)
    kinds = json.loads((model_dir / "model.json").read_text()).get("variants", {})
    return [
        ("default (fp32, 2 outputs, opt all)", default, DEFAULT_OUTPUTS),
        *((f"{kind} variant", dataclasses.replace(default, variant=kind), DEFAULT_OUTPUTS) for kind in sorted(kinds)),
        ("+ self_attention (3 outputs)", default, ALL_OUTPUTS),
        ("optimization disable", dataclasses.replace(default, optimization_level="disable"), DEFAULT_OUTPUTS),
        ("optimization basic", dataclasses.replace(default, optimization_level="basic"), DEFAULT_OUTPUTS),
        ("optimization extended", dataclasses.replace(default, optimization_level="extended"), DEFAULT_OUTPUTS),
        ("intra-op threads 1", dataclasses.replace(default, intra_op_threads=1), DEFAULT_OUTPUTS),
        ("no intra-op spinning", dataclasses.replace(default, spinning=False), DEFAULT_OUTPUTS),
    ]


def http_cases() -> list[servers.ServerSpec]:
    return [
        servers.service_spec("default"),  # workers: one per core here
        servers.service_spec("variant int8", "int8"),
        servers.service_spec("batches_in_flight 1", settings={"batches_in_flight": "1"}),
        servers.service_spec("max_queue_delay_ms 2", settings={"max_queue_delay_ms": "2"}),
        servers.service_spec("length_buckets 16,32,64", settings={"length_buckets": "16,32,64"}),
        servers.service_spec("batch_split_min 0 (one call per batch)", settings={"batch_split_min": "0"}),
        servers.service_spec("intra_op_threads 1", settings={"intra_op_threads": "1"}),
        servers.service_spec("intra_op_threads 2", settings={"intra_op_threads": "2"}),
        servers.service_spec("allow_spinning true", settings={"allow_spinning": "true"}),
        servers.service_spec("workers 1 (one process, every core its intra-op thread)", settings={"workers": "1"}),
        servers.naive_spec("naive baseline"),
        servers.naive_spec("HTTP floor (empty FastAPI route)", noop=True),
    ]


def parse_point(text: str) -> Point:
    per_request, connections = text.lower().split("x")
    return int(per_request), int(connections)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="ONNX Runtime options and service settings, each vs the default.")
    parser.add_argument("--quick", action="store_true", help="short runs: 2 s per point, one round")
    parser.add_argument("--only", choices=["raw", "http"], help="run one half only")
    parser.add_argument(
        "--model-dir", type=Path, default=MODEL_DIR,
        help="version folder for the in-process half; every variant in its model.json is measured",
    )  # fmt: skip
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 10; quick: 2)")
    parser.add_argument("--rounds", type=int, help="repetitions, alternating order (default 2; quick: 1)")
    parser.add_argument("--raw-duration", type=float, help="seconds per raw measurement (default 3; quick: 1)")
    parser.add_argument(
        "--points", type=lambda t: [parse_point(p) for p in t.split(",")], default=[(1, 1), (1, 32), (16, 32)]
    )
    parser.add_argument("--cases", help="comma-separated substrings: only HTTP cases whose label holds one")
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="folder for compare.json, compare.md and server logs")
    args = parser.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 10)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.raw_duration = args.raw_duration or (1.0 if args.quick else 3.0)
    return args


def compare_raw(samples: list[Sample], args: argparse.Namespace) -> tuple[str, list[dict[str, object]]]:
    cases = raw_cases(len(os.sched_getaffinity(0)), args.model_dir)
    sessions = [make_session(args.model_dir, config) for _, config, _ in cases]
    batches = {size: make_batches(samples, size) for size in (1, 32)}
    runs: dict[tuple[int, int], list[RawResult]] = {}
    for round_ in range(args.rounds):
        order = range(len(cases)) if round_ % 2 == 0 else reversed(range(len(cases)))
        for index in order:
            for size in (1, 32):
                result = measure(sessions[index], batches[size], cases[index][2], args.raw_duration)
                runs.setdefault((index, size), []).append(result)
                progress(f"raw {cases[index][0]:>36} batch {size:<2} {result.sequences_per_s:8,.0f} seq/s")

    def rate(index: int, size: int) -> float:
        return statistics.median(r.sequences_per_s for r in runs[(index, size)])

    def p50(index: int, size: int) -> float:
        return statistics.median(r.latency_p50_ms for r in runs[(index, size)])

    rows, records = [], []
    for index, (label, _, _) in enumerate(cases):
        rows.append([label, rate(index, 1), p50(index, 1), rate(index, 32), p50(index, 32)])
        rows[-1] += [ratio(rate(index, 1), rate(0, 1)), ratio(rate(index, 32), rate(0, 32))]
        records.append({"case": label, "batch_1": rate(index, 1), "batch_32": rate(index, 32)})
    headers = ["case", "b1 seq/s", "b1 p50 ms", "b32 seq/s", "b32 p50 ms", "b1 vs default", "b32 vs default"]
    return markdown_table(headers, rows), records


def http_point_table(results: dict[str, dict[Point, HttpSummary]], point: Point) -> str:
    base = results["default"][point].sequences_per_s
    rows = []
    for label, cells in results.items():
        s = cells[point]
        batch = s.counters.get("mean_batch_size")
        rows.append([
            label, s.sequences_per_s, s.p50_ms, s.p99_ms, s.errors, f"{batch:.1f}" if batch else "-",
            s.server_cpu_ms_per_sequence, ratio(s.sequences_per_s, base),
        ])  # fmt: skip
    headers = ["case", "seq/s", "p50 ms", "p99 ms", "errors", "mean batch", "CPU ms/seq", "vs default"]
    return markdown_table(headers, rows)


def compare_http(samples: list[Sample], args: argparse.Namespace, work: Path) -> tuple[str, dict[str, object]]:
    specs = http_cases()
    if args.cases:
        wanted = [w.strip() for w in args.cases.split(",")]
        specs = [s for s in specs if s.label == "default" or any(w in s.label for w in wanted)]
    sizes = sorted({n for n, _ in args.points})
    bodies = {n: write_bodies(build_bodies(samples, n), work / f"bodies-{n}.jsonl") for n in sizes}
    plan = LoadPlan(bodies, write_script(work), args.points, args.rounds, args.duration)
    with servers.running(specs, work) as running:
        results = measure_matrix(running, plan)
    sections = [f"#### {n} seq/request, {c} connections\n\n{http_point_table(results, (n, c))}" for n, c in args.points]
    records = {label: [dataclasses.asdict(s) for s in cells.values()] for label, cells in results.items()}
    return "\n\n".join(sections), records


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="attention-serve-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine.facts()
    samples = load_samples(args.model_dir / "tokenizer.json", args.texts, 64, args.seed)
    parts = ["## attention-serve comparisons", ""]  # machine facts go in last, with the load at the end
    document: dict[str, object] = {"machine": info}
    if args.only in (None, "raw"):
        table, records = compare_raw(samples, args)
        parts += [f"### ONNX Runtime in-process ({args.rounds} round(s) of {args.raw_duration:g} s, medians)", table]
        document["raw"] = records
    if args.only in (None, "http"):
        text, http_records = compare_http(samples, args, work)
        parts += [f"### Service settings over HTTP (wrk -t1, {args.rounds} round(s) of {args.duration} s)", text]
        document["http"] = http_records
    info["load_average_at_end"] = machine.load_average()
    parts[1] = machine.facts_markdown(info)
    markdown = "\n\n".join(parts)
    print(markdown)
    if args.out:
        (work / "compare.json").write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")
        (work / "compare.md").write_text(markdown + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
