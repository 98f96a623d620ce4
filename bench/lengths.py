"""The lone long request: the service, the service without its lone-batch session, and the naive endpoint, with
texts of exactly 16, 64 and 128 tokens, at 1 and 32 connections, side by side in one run; raw batch 1 per length.

    python bench/lengths.py [--lengths 16,64,128] [--concurrency 1,32] [--duration 10] [--rounds 2] [--out DIR]

"service" runs with its defaults (one worker per core, one intra-op thread each; a batch that has its worker to
itself runs on the event loop's thread); "service, inline off" is the same with ``LONE_BATCH_INLINE=false`` (every
batch handed to an inference thread and back, as before). See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the bench package from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from tokenizers import Tokenizer

from bench import machine, report, servers
from bench.corpus import Sample, build_bodies, write_bodies
from bench.harness import LoadPlan, measure_matrix, numbers, progress
from bench.load import write_script
from bench.raw import DEFAULT_OUTPUTS, SessionConfig, make_batches, make_session, measure
from bench.report import HttpSummary
from model_export.data import load_bundled_corpus

MODEL_DIR = servers.ROOT / "models" / "sentiment" / "1"
LABELS = ("service", "service, inline off", "naive")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The lone long request, at several exact lengths.")
    parser.add_argument("--lengths", type=numbers, default=[16, 64, 128], help="tokens per text, e.g. 16,64,128")
    parser.add_argument("--concurrency", type=numbers, default=[1, 32], help="wrk connections, e.g. 1,32")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="repetitions per point, alternating server order")
    parser.add_argument("--raw-duration", type=float, default=3.0, help="seconds per raw measurement")
    parser.add_argument("--texts", type=int, default=512, help="distinct texts per length")
    parser.add_argument("--out", type=Path, help="folder for results.json, results.md, bodies and server logs")
    return parser.parse_args(argv)


def exact_samples(tokenizer: Tokenizer, length: int, count: int, seed: int = 0) -> list[Sample]:
    """``count`` texts of exactly ``length`` tokens: corpus tweets joined, cut after a whole word, re-checked."""
    texts = sorted(set(load_bundled_corpus().texts))
    random.Random(seed).shuffle(texts)
    found: list[Sample] = []
    words: list[str] = []
    for text in texts:
        words += text.split()
        candidate = " ".join(words)
        ids = tokenizer.encode(candidate, add_special_tokens=False).ids
        if len(ids) < length:
            continue
        while len(ids) > length and len(words) > 1:  # drop whole words until it fits
            words.pop()
            candidate = " ".join(words)
            ids = tokenizer.encode(candidate, add_special_tokens=False).ids
        if len(ids) == length:
            found.append(Sample(candidate, np.asarray(ids, dtype=np.int32)))
        words = []
        if len(found) == count:
            return found
    raise ValueError(f"only {len(found)} texts of exactly {length} tokens could be made; asked for {count}")


def cell(summary: HttpSummary | None) -> str:
    return "-" if summary is None else f"{summary.requests_per_s:,.0f}, {summary.p99_ms:.2f}"


def ratio(a: HttpSummary | None, b: HttpSummary | None) -> str:
    return "-" if not a or not b else report.ratio(a.requests_per_s, b.requests_per_s)


def table(results: dict[int, dict[str, dict[tuple[int, int], HttpSummary]]], raw: dict[int, float]) -> str:
    headers = ["tokens", "conc", *(f"{label}: req/s, p99 ms" for label in LABELS)]
    headers += ["service / naive", "service / inline off", "service p99 − raw b1 p99"]
    rows: list[list[object]] = []
    for length, http in results.items():
        for point in sorted(http[LABELS[0]], key=lambda p: p[1]):
            service, inline_off, naive = (http[label].get(point) for label in LABELS)
            gap = f"{service.p99_ms - raw[length]:+.2f} ms" if service and point[1] == 1 else ""
            cells = [cell(http[label].get(point)) for label in LABELS]
            rows.append([length, point[1], *cells, ratio(service, naive), ratio(service, inline_off), gap])
    return report.markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="attention-serve-lengths-"))
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    samples = {n: exact_samples(tokenizer, n, args.texts) for n in args.lengths}
    threads = len(os.sched_getaffinity(0))
    session = make_session(MODEL_DIR, SessionConfig(intra_op_threads=threads))
    raw = {n: measure(session, make_batches(s, 1), DEFAULT_OUTPUTS, args.raw_duration) for n, s in samples.items()}
    for n, result in raw.items():
        progress(f"raw batch 1, {n} tokens: p50 {result.latency_p50_ms:.2f} ms, p99 {result.latency_p99_ms:.2f} ms")
    specs = [
        servers.service_spec(LABELS[0]),
        servers.service_spec(LABELS[1], settings={"lone_batch_inline": "false"}),
        servers.naive_spec(LABELS[2], threads=threads),
    ]
    script = write_script(work)
    results: dict[int, dict[str, dict[tuple[int, int], HttpSummary]]] = {}
    with servers.running(specs, work) as running:
        for n, texts in samples.items():
            bodies = {1: write_bodies(build_bodies(texts, 1), work / f"bodies-{n}.jsonl")}
            plan = LoadPlan(bodies, script, [(1, c) for c in args.concurrency], args.rounds, args.duration)
            results[n] = measure_matrix(running, plan)
    p99 = {n: r.latency_p99_ms for n, r in raw.items()}
    raw_lines = ", ".join(
        f"{n} tokens p50 {r.latency_p50_ms:.2f} / p99 {r.latency_p99_ms:.2f} ms" for n, r in raw.items()
    )
    markdown = "\n\n".join(
        [
            "## The lone long request",
            machine.facts_markdown(machine.facts()),
            f"{args.rounds} round(s) of {args.duration} s per point, servers alternating; one text per request, "
            f"{args.texts} texts of exactly each length. Raw batch 1 ({threads} intra-op threads): {raw_lines}.",
            table(results, p99),
        ]
    )
    print(markdown)
    if args.out:
        document = {
            "raw": {n: dataclasses.asdict(r) for n, r in raw.items()},
            "http": {
                n: {label: [dataclasses.asdict(s) for s in cells.values()] for label, cells in http.items()}
                for n, http in results.items()
            },
        }
        (work / "results.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
        (work / "results.md").write_text(markdown + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
