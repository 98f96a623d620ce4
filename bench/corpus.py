"""Benchmark inputs: real tweets of the bundled corpus, filtered by token count, and request bodies of them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from tokenizers import Tokenizer

from model_export.data import load_bundled_corpus


@dataclass(frozen=True)
class Sample:
    """One text and its token ids, as the service's tokenizer produces them (no special tokens)."""

    text: str
    ids: np.ndarray


def load_samples(tokenizer_path: Path, count: int, max_tokens: int = 64, seed: int = 0) -> list[Sample]:
    """``count`` distinct corpus texts of 1 to ``max_tokens`` tokens, in a seeded random order."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    texts = sorted(set(load_bundled_corpus().texts))
    random.Random(seed).shuffle(texts)
    samples: list[Sample] = []
    for start in range(0, len(texts), 1024):
        chunk = texts[start : start + 1024]
        for text, encoding in zip(chunk, tokenizer.encode_batch(chunk, add_special_tokens=False), strict=True):
            if 1 <= len(encoding.ids) <= max_tokens:
                samples.append(Sample(text, np.asarray(encoding.ids, dtype=np.int32)))
        if len(samples) >= count:
            return samples[:count]
    raise ValueError(f"the corpus has only {len(samples)} texts of 1 to {max_tokens} tokens; asked for {count}")


def build_bodies(samples: list[Sample], per_request: int, attention: str = "pooling") -> list[bytes]:
    """Request bodies of ``per_request`` consecutive texts each, cycling through the samples once."""
    texts = [s.text for s in samples]
    usable = len(texts) - len(texts) % per_request
    return [
        orjson.dumps({"instances": texts[i : i + per_request], "parameters": {"attention": attention}})
        for i in range(0, usable, per_request)
    ]


def write_bodies(bodies: list[bytes], path: Path) -> Path:
    """One JSON body per line (orjson never writes a raw newline), for the wrk script to read."""
    path.write_bytes(b"\n".join(bodies) + b"\n")
    return path


def token_stats(samples: list[Sample]) -> dict[str, float]:
    lengths = np.array([len(s.ids) for s in samples])
    return {
        "texts": len(samples),
        "mean_tokens": round(float(lengths.mean()), 1),
        "p50_tokens": float(np.percentile(lengths, 50)),
        "max_tokens": int(lengths.max()),
    }
