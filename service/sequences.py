"""A request's items → checked token-id sequences: texts tokenized in one call (offsets kept), ids and lengths
checked against the version, long texts cut when asked. Every mistake is a 400 naming the item."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.errors import InvalidInput
from service.model_folder import LoadedFolder


@dataclass(frozen=True)
class Checked:
    """One sequence ready for the batcher; a text's tokens and their character spans come with it."""

    ids: np.ndarray
    truncated: bool
    tokens: list[str] | None = None
    offsets: list[tuple[int, int]] | None = None


@dataclass(frozen=True)
class ItemLimits:
    max_instances: int
    max_text_chars: int


def prepare(
    items: Sequence[str | np.ndarray], source: str, truncate: bool, folder: LoadedFolder, limits: ItemLimits
) -> list[Checked]:
    """Check the count and text sizes first (cheap), then tokenize the texts and check every sequence."""
    if not items:
        raise InvalidInput(f"{source}: empty batch; send at least one sequence")
    if len(items) > limits.max_instances:
        raise InvalidInput(f"{source}: {len(items)} sequences, more than the limit of {limits.max_instances}")
    texts = {i: item for i, item in enumerate(items) if isinstance(item, str)}
    for index, text in texts.items():
        if len(text) > limits.max_text_chars:
            raise InvalidInput(f"{source}[{index}]: text of {len(text)} characters, limit {limits.max_text_chars}")
    encoded = dict(zip(texts, _encode(list(texts.values()), folder, truncate), strict=True))
    spec, dtype = folder.spec, folder.model.id_dtype
    checked = []
    for index, item in enumerate(items):
        sequence = encoded[index] if index in encoded else Checked(np.asarray(item), False)
        sequence = _fit(f"{source}[{index}]", sequence, truncate, spec.max_length, spec.vocab_size)
        checked.append(dataclasses.replace(sequence, ids=sequence.ids.astype(dtype, copy=False)))
    return checked


def _encode(texts: list[str], folder: LoadedFolder, cut: bool) -> list[Checked]:
    """``cut``: through the tokenizer's own truncation, which keeps the special tokens its post-processor adds
    (a BERT tokenizer's closing [SEP] stays)."""
    if not texts:
        return []
    return [Checked(e.ids, e.cut, e.tokens, e.offsets) for e in folder.tokenizer.encode(texts, cut)]


def _fit(where: str, seq: Checked, truncate: bool, max_length: int, vocab_size: int) -> Checked:
    """Check one sequence: not empty, ids in the vocabulary, within the length limit (or cut if asked)."""
    if len(seq.ids) == 0:
        kind = "text has no tokens" if seq.tokens is not None else "sequence is empty"
        raise InvalidInput(f"{where}: the {kind}")
    if seq.tokens is None and (seq.ids.min() < 0 or seq.ids.max() >= vocab_size):
        bad = int(seq.ids[(seq.ids < 0) | (seq.ids >= vocab_size)][0])
        raise InvalidInput(f"{where}: token id {bad} is outside the vocabulary [0, {vocab_size - 1}]")
    if len(seq.ids) <= max_length:
        return seq
    if not truncate:
        raise InvalidInput(
            f"{where}: {len(seq.ids)} tokens, more than the model's maximum of {max_length}; "
            "ask for truncation to cut it"
        )
    return Checked(seq.ids[:max_length], True)
