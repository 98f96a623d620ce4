"""What one ONNX call is fed: token-id rows → padded ids (and mask) as the signature says, in batches.

A model that padding would change (``padding: "none"``) gets only rows of one length per call, as the service's
batcher gives it; a fixed-length graph gets every row padded to its length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from model_export.tokenization import pad_rows
from model_format.signature import PROBABILITIES, Signature
from model_format.text import TextTokenizer

Feeds = dict[str, np.ndarray]
UNK_TOKENS = ("[UNK]", "<unk>", "<UNK>")


def feed(rows: Sequence[Sequence[int]], signature: Signature) -> Feeds:
    """One call's inputs: rows right-padded with the pad id (to the fixed length or the longest row)."""
    if not signature.paddable and len({len(row) for row in rows}) > 1:
        raise ValueError("this model cannot be padded: a call takes rows of one length only")
    ids, mask = pad_rows(rows, signature.pad_id, signature.fixed_length)
    feeds = {signature.token_ids: ids}
    if signature.mask is not None:
        feeds[signature.mask] = mask
    if signature.segments is not None:  # one text per row: every token in segment 0
        feeds[signature.segments] = np.zeros_like(ids)
    return feeds


def batches(rows: Sequence[Sequence[int]], signature: Signature, size: int = 64) -> tuple[list[Feeds], list[int]]:
    """The rows as calls of at most ``size``, and the row order they come in (grouped by length if unpaddable)."""
    order = list(range(len(rows)))
    if not signature.paddable:
        order.sort(key=lambda i: len(rows[i]))
    groups: list[list[int]] = []
    for index in order:
        if groups and len(groups[-1]) < size and (signature.paddable or len(rows[groups[-1][0]]) == len(rows[index])):
            groups[-1].append(index)
        else:
            groups.append([index])
    return [feed([rows[i] for i in group], signature) for group in groups], order


def encode(tokenizer: TextTokenizer, texts: Sequence[str], signature: Signature) -> list[list[int]]:
    """Token ids per text exactly as the service makes them when asked to cut long texts (the special tokens the
    file's post-processor adds kept), up to the tokenizer's maximum length.

    A text without tokens becomes one unknown token (the pad id where the vocabulary has none) unless the
    graph takes a fixed length, which a model ending a ``TextVectorization`` sees as all padding.
    """
    unknown = next((i for i in map(tokenizer.token_id, UNK_TOKENS) if i is not None), signature.pad_id)
    empty: list[int] = [] if signature.fixed_length else [unknown]
    return [[int(i) for i in encoded.ids] or empty for encoded in tokenizer.encode(list(texts), cut=True)]


def predict(onnx_bytes: bytes, calls: Sequence[Feeds], order: Sequence[int], output: str = PROBABILITIES) -> np.ndarray:
    """One output of a graph over prepared calls, on the CPU, with the rows back in their original order."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    rows = np.concatenate([session.run([output], call)[0] for call in calls])
    restored = np.empty_like(rows)
    restored[np.asarray(order)] = rows
    return restored


def random_cases(signature: Signature, vocab_size: int, max_len: int, seed: int) -> list[Feeds]:
    """Random ids (never the pad id) of several batch sizes and lengths, from one token up to ``max_len``."""
    rng = np.random.default_rng(seed)
    cases = []
    for batch, longest in [(1, 1), (1, 7), (3, 16), (8, 33), (2, max_len), (16, 64)]:
        length = min(longest, max_len)
        lengths = rng.integers(1, length + 1, size=batch) if signature.paddable else np.full(batch, length)
        lengths[0] = length
        rows = []
        for size in lengths:
            ids = rng.integers(0, vocab_size - 1, size=int(size))
            rows.append([int(i) + (i >= signature.pad_id) for i in ids])  # skip the pad id
        cases.append(feed(rows, signature))
    return cases
