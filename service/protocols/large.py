"""Encoding a large answer without holding up the event loop.

Every request of a worker shares one event loop, and uvicorn's supervisor kills a worker whose loop misses its health
check for 5 s: a multi-megabyte JSON encode on the loop's thread stalls every other request and, long enough, the
worker itself. An answer holding more than ``LARGE_VALUES`` attention values is encoded in a worker thread, array by
array in slices (``orjson.Fragment``s joined at the end): the encoder holds Python's lock for one slice at a time,
so the loop gets its turn between slices. Small answers, the common case, are encoded at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson

from service.dataplane import InferenceResult

OPTIONS = orjson.OPT_SERIALIZE_NUMPY
LARGE_VALUES = 1 << 18  # ~2.5 MB of JSON: above it, off the loop
SLICE_VALUES = 1 << 17  # values per encoder call (a few milliseconds each)


def attention_values(result: InferenceResult) -> int:
    """How many attention values the result holds (maps and per-token outputs)."""
    total = 0
    for prediction in result.predictions:
        for array in (prediction.attention, prediction.self_attention, prediction.rollout):
            total += array.size if array is not None else 0
    return total


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=OPTIONS)


async def encode(content: Any, values: int) -> bytes:
    """``content`` as JSON: at once when ``values`` is small, else in a worker thread, slice by slice."""
    if values <= LARGE_VALUES:
        return dumps(content)
    return await asyncio.to_thread(lambda: dumps(_fragments(content)))


def _fragments(content: Any) -> Any:
    """``content`` with every large array replaced by its JSON, encoded in slices along its first axis."""
    if isinstance(content, np.ndarray) and content.size > SLICE_VALUES:
        return orjson.Fragment(_sliced(content))
    if isinstance(content, dict):
        return {key: _fragments(value) for key, value in content.items()}
    if isinstance(content, list):
        return [_fragments(value) for value in content]
    return content


def _sliced(array: np.ndarray) -> bytes:
    if array.ndim == 0 or array.size <= SLICE_VALUES:
        return dumps(np.ascontiguousarray(array))
    if array.ndim == 1:
        step = SLICE_VALUES
        parts = [dumps(array[i : i + step])[1:-1] for i in range(0, len(array), step)]
        return b"[" + b",".join(part for part in parts if part) + b"]"
    return b"[" + b",".join(_sliced(row) for row in array) + b"]"
