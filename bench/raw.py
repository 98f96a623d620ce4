"""The in-process ONNX Runtime ceiling: ``session.run`` on pre-padded batches of real sequences, nothing else."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.corpus import Sample
from service.batching import pad

# What the service requests by default (attention "pooling"); "self_attention" only when explanations are asked.
DEFAULT_OUTPUTS = ("probabilities", "attention")
ALL_OUTPUTS = ("probabilities", "attention", "self_attention")
OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

Batch = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class SessionConfig:
    """The session options the service sets (runtime.py), with its defaults; ``spinning`` is ORT's own default."""

    variant: str = "fp32"
    intra_op_threads: int = 2
    inter_op_threads: int = 1
    optimization_level: str = "all"
    spinning: bool = True


@dataclass(frozen=True)
class RawResult:
    batch_size: int
    outputs: tuple[str, ...]
    calls: int
    sequences_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float


def model_file(model_dir: Path, variant: str) -> Path:
    """The graph file of a variant, as named in the version's ``model.json``."""
    document = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    if variant == "fp32":
        return model_dir / str(document["files"]["model"])
    entry = document.get("variants", {}).get(variant)
    if not isinstance(entry, dict) or "file" not in entry:
        raise ValueError(f"{model_dir} has no {variant!r} variant")
    return model_dir / str(entry["file"])


def make_session(model_dir: Path, config: SessionConfig) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[config.optimization_level]
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    options.log_severity_level = 3
    if not config.spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    path = model_file(model_dir, config.variant)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def make_batches(samples: Sequence[Sample], batch_size: int, pad_id: int = 0) -> list[Batch]:
    """Consecutive samples, ``batch_size`` at a time, right-padded to the longest of each batch, with masks."""
    # The service's own padding, so the ceiling pays exactly what a served batch pays.
    starts = range(0, len(samples) - batch_size + 1, batch_size)
    return [pad([s.ids for s in samples[start : start + batch_size]], pad_id) for start in starts]


def measure(
    session: ort.InferenceSession, batches: Sequence[Batch], outputs: Sequence[str], duration_s: float
) -> RawResult:
    """Run the batches in a loop for ``duration_s`` (after one warm pass over 8 of them) and time every call."""
    names = list(outputs)
    for ids, mask in batches[:8]:
        session.run(names, {"input_ids": ids, "attention_mask": mask})
    timings: list[float] = []
    sequences = 0
    started = time.perf_counter()
    deadline = started + duration_s
    finished = started
    while finished < deadline:
        ids, mask = batches[len(timings) % len(batches)]
        before = time.perf_counter()
        session.run(names, {"input_ids": ids, "attention_mask": mask})
        finished = time.perf_counter()
        timings.append(finished - before)
        sequences += ids.shape[0]
    latencies = np.array(timings) * 1000.0
    return RawResult(
        batch_size=batches[0][0].shape[0],
        outputs=tuple(outputs),
        calls=len(timings),
        sequences_per_s=sequences / (finished - started),
        latency_p50_ms=float(np.percentile(latencies, 50)),
        latency_p99_ms=float(np.percentile(latencies, 99)),
    )
