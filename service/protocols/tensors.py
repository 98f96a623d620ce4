"""Tensor helpers shared by the protocols: ragged → padded stacking, and the v2 binary tensor format.

Binary tensor data (Triton's extension of the Open Inference Protocol): fixed-size types are raw
little-endian bytes in row-major order; BYTES elements are each a 4-byte little-endian length followed
by the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.errors import InvalidInput

NUMPY_DATATYPES: dict[str, np.dtype[Any]] = {
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP32": np.dtype("<f4"),
}
DATATYPES = {"string": "BYTES", "int32": "INT32", "int64": "INT64", "float32": "FP32"}
_LENGTH = struct.Struct("<I")


def pad_stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-sequence arrays whose sequence axes differ, zero-padding every axis to the longest."""
    shape = np.max([a.shape for a in arrays], axis=0)
    out = np.zeros((len(arrays), *shape), dtype=np.float32)
    for i, array in enumerate(arrays):
        index: tuple[int | slice, ...] = (i, *(slice(0, n) for n in array.shape))
        out[index] = array
    return out


def offsets_with_sources(prediction: Any) -> list[tuple[int, int, int]]:
    """Each token's character span and which text it came from (0 ``text``, 1 ``text_pair``, -1 a special
    token), for a model that reads text pairs."""
    offsets, sources = prediction.offsets or [], prediction.sources
    return [(start, end, int(source)) for (start, end), source in zip(offsets, sources, strict=True)]


def offset_rows(predictions: Sequence[Any]) -> np.ndarray:
    """``offsets`` as one INT32 tensor ``[N, T, 2]``, or ``[N, T, 3]`` with each token's text for a pair model."""
    pairs = any(p.sources is not None for p in predictions)
    width = 3 if pairs else 2
    rows = []
    for p in predictions:
        spans = np.asarray(p.offsets or [], dtype=np.float32).reshape(-1, 2)
        if pairs:
            sources = np.asarray(p.sources if p.sources is not None else [], np.float32).reshape(-1, 1)
            spans = np.concatenate([spans, sources[: len(spans)]], axis=1) if len(spans) else spans.reshape(0, 3)
        rows.append(spans.reshape(-1, width))
    return pad_stack(rows).astype(np.int32)


def pad_strings(rows: Sequence[Sequence[str]]) -> list[list[str]]:
    width = max((len(row) for row in rows), default=0)
    return [list(row) + [""] * (width - len(row)) for row in rows]


def encode_bytes_elements(values: Sequence[str]) -> bytes:
    parts = []
    for value in values:
        data = value.encode("utf-8")
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_bytes_elements(buffer: bytes, count: int, where: str) -> list[str]:
    """Exactly ``count`` length-prefixed UTF-8 strings filling ``buffer``."""
    values: list[str] = []
    offset = 0
    while offset < len(buffer):
        if offset + 4 > len(buffer):
            raise InvalidInput(f"{where}: binary BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(buffer, offset)
        offset += 4
        if offset + length > len(buffer):
            raise InvalidInput(f"{where}: binary BYTES element {len(values)} runs past the end of the data")
        try:
            values.append(buffer[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"{where}: element {len(values)} is not valid UTF-8") from None
        offset += length
    if len(values) != count:
        raise InvalidInput(f"{where}: the binary data holds {len(values)} elements, the shape says {count}")
    return values


def decode_fixed(buffer: bytes, datatype: str, count: int, where: str) -> np.ndarray:
    dtype = NUMPY_DATATYPES[datatype]
    if len(buffer) != count * dtype.itemsize:
        raise InvalidInput(f"{where}: {len(buffer)} bytes of binary data, the shape needs {count * dtype.itemsize}")
    decoded: np.ndarray = np.frombuffer(buffer, dtype=dtype)
    return decoded


def encode_fixed(array: np.ndarray, datatype: str) -> bytes:
    return bytes(np.ascontiguousarray(array, dtype=NUMPY_DATATYPES[datatype]).tobytes())
