"""A request's items → checked token-id sequences: texts (and text pairs) tokenized in batch calls (offsets kept),
ids and lengths checked against the version, long texts cut when asked. Every mistake is a 400 naming the item."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model_format.text import Encoded
from service.errors import InvalidInput
from service.model_folder import LoadedFolder


@dataclass(frozen=True)
class TextPair:
    """Two texts a pair classifier reads together (NLI, paraphrase, question and passage)."""

    text: str
    pair: str


Item = str | np.ndarray | TextPair


@dataclass(frozen=True)
class Checked:
    """One sequence ready for the batcher; a text's tokens, their character spans, their segment ids and which text
    each came from (0 the text, 1 its pair, -1 a special token) come with it."""

    ids: np.ndarray
    truncated: bool
    tokens: list[str] | None = None
    offsets: list[tuple[int, int]] | None = None
    segments: np.ndarray | None = None
    sources: np.ndarray | None = None


@dataclass(frozen=True)
class ItemLimits:
    max_instances: int
    max_text_chars: int


def prepare(
    items: Sequence[Item], source: str, truncate: bool, folder: LoadedFolder, limits: ItemLimits
) -> list[Checked]:
    """Check the count and text sizes first (cheap), then tokenize the texts and check every sequence."""
    if not items:
        raise InvalidInput(f"{source}: empty batch; send at least one sequence")
    if len(items) > limits.max_instances:
        raise InvalidInput(f"{source}: {len(items)} sequences, more than the limit of {limits.max_instances}")
    texts = {i: item for i, item in enumerate(items) if isinstance(item, str)}
    pairs = {i: item for i, item in enumerate(items) if isinstance(item, TextPair)}
    _check_texts(source, texts, pairs, limits.max_text_chars, folder)
    encoded = dict(zip(texts, _encode(list(texts.values()), folder, truncate), strict=True))
    encoded |= dict(zip(pairs, _encode_pairs(list(pairs.values()), folder, truncate), strict=True))
    spec, dtype = folder.spec, folder.model.id_dtype
    checked = []
    for index, item in enumerate(items):
        sequence = encoded[index] if index in encoded else Checked(np.asarray(item), False)
        sequence = _fit(f"{source}[{index}]", sequence, truncate, spec.max_length, spec.vocab_size)
        checked.append(_typed(sequence, dtype))
    return checked


def _check_texts(
    source: str, texts: dict[int, str], pairs: dict[int, TextPair], limit: int, folder: LoadedFolder
) -> None:
    if pairs and not folder.spec.signature.pairs:
        index = next(iter(pairs))
        raise InvalidInput(
            f"{source}[{index}]: model '{folder.spec.name}' reads one text per sequence; it takes no text_pair"
        )
    sizes = [(i, "", len(t)) for i, t in texts.items()]
    for i, pair in pairs.items():
        sizes += [(i, ".text", len(pair.text)), (i, ".text_pair", len(pair.pair))]
    for index, part, size in sizes:
        if size > limit:
            raise InvalidInput(f"{source}[{index}]{part}: text of {size} characters, limit {limit}")


def _checked(encoded: Encoded) -> Checked:
    return Checked(encoded.ids, encoded.cut, encoded.tokens, encoded.offsets, encoded.type_ids, encoded.sources)


def _encode(texts: list[str], folder: LoadedFolder, cut: bool) -> list[Checked]:
    """``cut``: through the version's truncation, which keeps the special tokens its template adds."""
    if not texts:
        return []
    return [_checked(e) for e in folder.tokenizer.encode(texts, cut)]


def _encode_pairs(pairs: list[TextPair], folder: LoadedFolder, cut: bool) -> list[Checked]:
    if not pairs:
        return []
    return [_checked(e) for e in folder.tokenizer.encode_pairs([(p.text, p.pair) for p in pairs], cut)]


def _typed(sequence: Checked, dtype: np.dtype) -> Checked:
    ids = sequence.ids.astype(dtype, copy=False)
    segments = sequence.segments.astype(dtype, copy=False) if sequence.segments is not None else None
    return Checked(ids, sequence.truncated, sequence.tokens, sequence.offsets, segments, sequence.sources)


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
