"""In-process: what padding costs, and what splitting a batch by length (the service's ``BATCH_SPLIT_MIN``) saves.

Random batches of real mixed-length texts run either as one call padded to the batch's longest sequence, or sorted
by length and cut into calls of at least ``split_min`` sequences (``service.batching.split_by_length``). Two
session set-ups: the service's worker (one intra-op thread, no spinning) and the raw ceiling of ``run.py`` (all
usable cores, ONNX Runtime's spinning on). Prints sequences per second for each, and the ratio.

    python bench/padding.py [--batches 8,16,32] [--split-min 4] [--duration 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import servers
from bench.corpus import load_samples
from bench.raw import DEFAULT_OUTPUTS, SessionConfig, make_session
from bench.report import markdown_table, ratio
from service.batching import pad, split_by_length

MODEL_DIR = servers.ROOT / "models" / "sentiment" / "1"
Batch = list[np.ndarray]


def sequences_per_s(session: ort.InferenceSession, batches: Sequence[Batch], split_min: int, duration: float) -> float:
    """Sequences per second over repeated passes through ``batches``, split or not."""
    run = session.run
    sequences, started = 0, time.perf_counter()
    while time.perf_counter() - started < duration:
        for batch in batches:
            for part in split_by_length([len(r) for r in batch], split_min):
                ids, mask = pad([batch[i] for i in part], 0)
                run(list(DEFAULT_OUTPUTS), {"input_ids": ids, "attention_mask": mask})
            sequences += len(batch)
    return sequences / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="8,16,32", help="batch sizes (comma-separated)")
    parser.add_argument("--split-min", type=int, default=4)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    samples = load_samples(MODEL_DIR / "tokenizer.json", 2048)
    rng = np.random.default_rng(0)
    cores = len(os.sched_getaffinity(0))
    setups = {
        "service worker (1 thread, no spinning)": SessionConfig(intra_op_threads=1, spinning=False),
        f"raw ceiling set-up ({cores} threads, spinning)": SessionConfig(intra_op_threads=cores),
    }
    rows = []
    for label, config in setups.items():
        session = make_session(MODEL_DIR, config)
        for size in (int(b) for b in args.batches.split(",")):
            batches = [[samples[i].ids for i in rng.choice(len(samples), size, replace=False)] for _ in range(64)]
            one, split = [], []
            for _ in range(args.rounds):  # alternate, so drift reaches both
                one.append(sequences_per_s(session, batches, 0, args.duration))
                split.append(sequences_per_s(session, batches, args.split_min, args.duration))
            a, b = float(np.median(one)), float(np.median(split))
            rows.append([label, size, a, b, ratio(b, a)])
    headers = ["set-up", "batch", "one call: seq/s", f"split (min {args.split_min}): seq/s", "split / one"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
