"""The benchmark of issue 5: raw ONNX Runtime ceiling, the service over HTTP, and a naive FastAPI baseline.

    python bench/run.py [--quick] [--duration 10] [--rounds 2] [--concurrency 1,8,32,128] [--per-request 1,16]
                        [--variants fp32,int8] [--out DIR]

One machine, one run. Prints machine facts, the raw ceiling, the HTTP table with ratios, and PASS/MISS per target;
with ``--out`` also writes results.json and results.md there. See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the bench package from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import machine, servers
from bench.corpus import Sample, build_bodies, load_samples, token_stats, write_bodies
from bench.harness import LoadPlan, measure_matrix, numbers, progress
from bench.load import write_script
from bench.raw import DEFAULT_OUTPUTS, RawResult, SessionConfig, make_batches, make_session, measure
from bench.report import (
    HttpSummary,
    RawSummary,
    Target,
    http_table,
    raw_table,
    summarise_raw,
    targets,
    targets_table,
)

MODEL_DIR = servers.ROOT / "models" / "sentiment" / "1"
MAX_BATCH = 32  # the service's default ATTENTION_SERVE_MAX_BATCH_SIZE


def names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the service against the raw ceiling and a naive server.")
    parser.add_argument("--quick", action="store_true", help="short runs: 2 s per point, one round")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 10; quick: 2)")
    parser.add_argument("--rounds", type=int, help="repetitions per point, alternating server order (default 2)")
    parser.add_argument("--raw-duration", type=float, help="seconds per raw ONNX Runtime measurement (default 5)")
    parser.add_argument("--concurrency", type=numbers, default=[1, 8, 32, 128], help="wrk connections, e.g. 1,8,32")
    parser.add_argument("--per-request", type=numbers, default=[1, 16], help="sequences per request, e.g. 1,16")
    parser.add_argument("--variants", type=names, default=["fp32"], help="graph variants to compare, e.g. fp32,int8")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads everywhere (0: the usable cores)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument(
        "--setting", action="append", default=[], metavar="NAME=VALUE",
        help="a service setting without its ATTENTION_SERVE_ prefix, e.g. workers=2 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--texts", type=int, default=2048, help="distinct corpus texts to cycle through")
    parser.add_argument("--max-tokens", type=int, default=64, help="longest text, in tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=10, help="wrk request timeout in seconds (counted as errors)")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when a target is missed")
    parser.add_argument("--out", type=Path, help="folder for results.json, results.md, bodies and server logs")
    args = parser.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 10)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.raw_duration = args.raw_duration or (1.0 if args.quick else 5.0)
    args.threads = args.threads or len(os.sched_getaffinity(0))
    return args


RawRuns = dict[str, dict[int, list[RawResult]]]  # variant -> batch size -> one result per round


def measure_raw(samples: list[Sample], args: argparse.Namespace, rounds: int, into: RawRuns) -> None:
    """Batch 1 and batch 32 on the same sequences, alternating, for every variant; appends to ``into``."""
    batches = {size: make_batches(samples, size) for size in (1, MAX_BATCH)}
    for variant in args.variants:
        session = make_session(MODEL_DIR, SessionConfig(variant, intra_op_threads=args.threads))
        for _ in range(rounds):
            for size in (1, MAX_BATCH):
                result = measure(session, batches[size], DEFAULT_OUTPUTS, args.raw_duration)
                into.setdefault(variant, {}).setdefault(size, []).append(result)
                progress(f"raw {variant} batch {size}: {result.sequences_per_s:,.0f} seq/s")


def variant_section(
    variant: str,
    raw: tuple[RawSummary, RawSummary],
    http: dict[str, dict[tuple[int, int], HttpSummary]],
) -> tuple[str, list[Target]]:
    service, naive = http[f"service {variant}"], http.get(f"naive {variant}", {})
    pairs = [(summary, naive.get(key)) for key, summary in sorted(service.items())]
    found = targets(service, naive, *raw)
    text = "\n\n".join(
        [
            f"### Variant {variant}",
            "Raw ONNX Runtime ceiling (in-process, pre-padded batches, probabilities + attention; best round):",
            raw_table(list(raw)),
            "Over HTTP (wrk -t1; medians of the rounds; errors summed over them):",
            http_table(pairs, raw[1].sequences_per_s),
            "Targets:",
            targets_table(found),
        ]
    )
    return text, found


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="attention-serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine.facts()
    samples = load_samples(MODEL_DIR / "tokenizer.json", args.texts, args.max_tokens, args.seed)
    corpus = token_stats(samples)
    bodies = {n: write_bodies(build_bodies(samples, n), work / f"bodies-{n}.jsonl") for n in args.per_request}
    script = write_script(work)
    progress(f"{corpus['texts']} texts, mean {corpus['mean_tokens']} tokens; work folder {work}")

    raw_runs: RawRuns = {}
    before = (args.rounds + 1) // 2  # raw rounds are split around the HTTP runs, so drift reaches both
    measure_raw(samples, args, before, raw_runs)
    settings = {} if args.threads == len(os.sched_getaffinity(0)) else {"intra_op_threads": str(args.threads)}
    settings.update(dict(item.split("=", 1) for item in args.setting))
    specs = []
    for variant in args.variants:
        specs.append(servers.service_spec(f"service {variant}", variant, settings))
        if not args.no_naive:
            specs.append(servers.naive_spec(f"naive {variant}", variant, args.threads))
    points = [(n, c) for c in args.concurrency for n in args.per_request]
    plan = LoadPlan(bodies, script, points, args.rounds, args.duration, args.timeout)
    with servers.running(specs, work) as running:
        http = measure_matrix(running, plan)
    measure_raw(samples, args, args.rounds - before, raw_runs)
    info["load_average_at_end"] = machine.load_average()
    raw = {v: (summarise_raw(v, runs[1]), summarise_raw(v, runs[MAX_BATCH])) for v, runs in raw_runs.items()}

    sections: list[str] = []
    all_targets: list[Target] = []
    for variant in args.variants:
        text, found = variant_section(variant, raw[variant], http)
        sections.append(text)
        all_targets += found
    method = (
        f"{args.rounds} round(s) of {args.duration} s per point; within a point the servers alternate and their "
        "order flips each round, so drift hits both sides alike. "
        f"Raw: {args.raw_duration:g} s per batch size per round, batch 1 and {MAX_BATCH} alternating, rounds split "
        "before and after the HTTP runs. "
        f"Texts: {corpus['texts']} corpus tweets of 1-{args.max_tokens} tokens (mean {corpus['mean_tokens']}), "
        f"seed {args.seed}. Threads: {args.threads} intra-op in the raw sessions and the naive server; the service "
        f"runs with {', '.join(f'{k}={v}' for k, v in settings.items()) or 'its default settings'}. "
        "wrk and the servers share the cores. "
        "Rates count successful responses only; CPU ms/seq is the server process's CPU time (all its threads) "
        "per sequence answered."
    )
    markdown = "\n\n".join(["## attention-serve benchmark", machine.facts_markdown(info), method, *sections])
    print(markdown)
    if args.out:
        document = {
            "machine": info,
            "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "corpus": corpus,
            "raw": {v: [dataclasses.asdict(r) for r in pair] for v, pair in raw.items()},
            "http": {label: [dataclasses.asdict(s) for s in cells.values()] for label, cells in http.items()},
            "targets": [dataclasses.asdict(t) for t in all_targets],
        }
        (work / "results.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
        (work / "results.md").write_text(markdown + "\n", encoding="utf-8")
        progress(f"wrote {work / 'results.json'} and {work / 'results.md'}")
    return 1 if args.strict and not all(t.passed for t in all_targets) else 0


if __name__ == "__main__":
    sys.exit(main())
