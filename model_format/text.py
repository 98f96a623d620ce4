"""How text becomes token ids for a model version: its ``tokenizer.json``, one text or a pair, cut when asked.

The service tokenizes requests with this class, and the exporter's tokenizer parity gate checks an import with the
very same code, so what the gate passes is what is served. A ``tokenizer.json`` is a Hugging Face ``tokenizers``
file: its normalizer, pre-tokenizer, model and post-processor run as written (special tokens such as BERT's
``[CLS]`` … ``[SEP]`` are part of the ids, with an empty character span). Padding is the batcher's.

Truncation, when a request asks for it, cuts the texts and keeps the specials the post-processor adds. A pair is
cut like keras-hub's packer (the signature's ``text.truncation``): ``round_robin`` (the default) deals the room left
after the specials one token at a time to each text in turn, so the longer text loses tokens first and the shorter
keeps all it can; ``waterfall`` lets the first text take what it needs and cuts the second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

SPECIAL = -1  # the source of a token the post-processor added (no text)
PROBE = "a"


@dataclass(frozen=True)
class _Piece:
    """One slot of the post-processor's template: a special token, or the tokens of text 0 or 1."""

    source: int
    id: int = 0
    token: str = ""
    type_id: int = 0


@dataclass(frozen=True)
class Encoded:
    """One sequence: ids, token strings, each token's character span, whether a text was cut, the segment
    (token type) ids, and which text each token came from (0 the text, 1 the pair's second, -1 a special)."""

    ids: np.ndarray
    tokens: list[str]
    offsets: list[tuple[int, int]]
    cut: bool
    type_ids: np.ndarray
    sources: np.ndarray


def round_robin(lengths: tuple[int, int], room: int) -> tuple[int, int]:
    """How many tokens of each text to keep when ``room`` is dealt one token at a time to each in turn."""
    first, second = lengths
    if first + second <= room:
        return first, second
    kept_first = min(first, max(room - second, (room + 1) // 2))
    return kept_first, room - kept_first


def waterfall(lengths: tuple[int, int], room: int) -> tuple[int, int]:
    """How many tokens of each text to keep when the first takes what it needs of ``room`` and the second the rest."""
    kept_first = min(lengths[0], room)
    return kept_first, min(lengths[1], room - kept_first)


TRUNCATIONS = {"round_robin": round_robin, "waterfall": waterfall}


class TextTokenizer:
    """A version's ``tokenizer.json``: texts and pairs → ``Encoded``, in batch calls to the Rust tokenizer."""

    def __init__(
        self,
        path: Path | None,
        id_dtype: np.dtype,
        max_length: int,
        *,
        data: str | None = None,
        truncation: str = "round_robin",
    ) -> None:
        if truncation not in TRUNCATIONS:
            raise ValueError(f"unknown truncation {truncation!r}: expected one of {sorted(TRUNCATIONS)}")
        self._share = TRUNCATIONS[truncation]
        tokenizer = Tokenizer.from_str(data) if data is not None else Tokenizer.from_file(str(path))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self.id_dtype, self.max_length = id_dtype, max_length
        self.vocab_size: int = tokenizer.get_vocab_size()
        self.has_template = tokenizer.post_processor is not None
        probe = tokenizer.encode(PROBE, add_special_tokens=False)
        self._single_skeleton = self._skeleton(tokenizer.post_process(probe))
        pair = tokenizer.encode(PROBE, PROBE) if self.has_template else None
        self._pair_skeleton = self._skeleton(pair) if pair is not None else ()
        # A pair template joins the texts with special tokens between them (BERT's [SEP], RoBERTa's </s></s>).
        self.pairs = any(p.source == 1 for p in self._pair_skeleton) and any(
            p.source == SPECIAL for p in self._pair_skeleton
        )
        # The special tokens the template adds ([CLS], [SEP], <s>, </s>): not words of the text.
        self.special_ids = frozenset(
            p.id for p in (*self._single_skeleton, *self._pair_skeleton) if p.source == SPECIAL
        )

    def encode(self, texts: Sequence[str], cut: bool = False) -> list[Encoded]:
        """Encode texts in one call; ``cut``: to the maximum length, each result saying whether it was longer."""
        if cut:
            return self._encode_cut([(text, None) for text in texts])
        # A batch call hands even one text to the Rust thread pool: a wake-up, costly under load.
        encodings = [self._tokenizer.encode(texts[0])] if len(texts) == 1 else self._tokenizer.encode_batch(list(texts))
        return [self._encoded(e, False) for e in encodings]

    def encode_pairs(self, pairs: Sequence[tuple[str, str]], cut: bool = False) -> list[Encoded]:
        """Encode (text, text_pair) pairs with the post-processor's pair template (its segment ids included)."""
        if cut:
            return self._encode_cut(list(pairs))
        return [self._encoded(e, False) for e in self._tokenizer.encode_batch(list(pairs))]

    def token_id(self, token: str) -> int | None:
        found = self._tokenizer.token_to_id(token)
        return None if found is None else int(found)

    def tokens_of(self, ids: Sequence[int]) -> list[str]:
        return [self._tokenizer.id_to_token(int(i)) or "" for i in ids]

    def _encode_cut(self, items: list[tuple[str, str | None]]) -> list[Encoded]:
        """Each text alone without specials, cut to its share of the room, then joined as the template joins them.

        Not through ``Encoding.truncate`` + ``post_process``: the cut-off tokens become "overflowing" encodings,
        which the post-processor multiplies out for a pair (two 3,000-token texts cut to 2 tokens: 2.25 million
        encodings, 55 s). The template is read once, at load, by post-processing a probe (``_skeleton``).
        """
        flat = [text for item in items for text in item if text is not None]
        parts = iter(self._tokenizer.encode_batch(flat, add_special_tokens=False))
        found = []
        for _first, second_text in items:
            first = next(parts)
            second = next(parts) if second_text is not None else None
            skeleton = self._pair_skeleton if second is not None else self._single_skeleton
            room = max(self.max_length - sum(1 for piece in skeleton if piece.source == SPECIAL), 0)
            lengths = (len(first.ids), len(second.ids) if second is not None else 0)
            keep = self._share(lengths, room) if second is not None else (min(lengths[0], room), 0)
            found.append(self._joined(skeleton, (first, second), keep, keep != lengths))
        return found

    def _joined(
        self, skeleton: tuple[_Piece, ...], texts: tuple[Encoding, Encoding | None], keep: tuple[int, int], cut: bool
    ) -> Encoded:
        ids: list[int] = []
        tokens: list[str] = []
        offsets: list[tuple[int, int]] = []
        types: list[int] = []
        sources: list[int] = []
        for piece in skeleton:
            text = texts[piece.source] if piece.source != SPECIAL else None
            if text is None:
                ids.append(piece.id)
                tokens.append(piece.token)
                offsets.append((0, 0))
                count = 1
            else:
                count = keep[piece.source]
                ids += text.ids[:count]
                tokens += text.tokens[:count]
                offsets += text.offsets[:count]
            types += [piece.type_id] * count
            sources += [piece.source] * count
        return Encoded(
            np.asarray(ids, self.id_dtype),
            tokens,
            offsets,
            cut,
            np.asarray(types, self.id_dtype),
            np.asarray(sources, np.int8),
        )

    @staticmethod
    def _skeleton(encoding: Encoding) -> tuple[_Piece, ...]:
        """The template as slots: each special token, and one slot per run of a text's tokens."""
        pieces: list[_Piece] = []
        for index, source in enumerate(encoding.sequence_ids):
            if source is None:
                token = encoding.tokens[index]
                pieces.append(_Piece(SPECIAL, encoding.ids[index], token, encoding.type_ids[index]))
            elif not pieces or pieces[-1].source != source:
                pieces.append(_Piece(source, type_id=encoding.type_ids[index]))
        return tuple(pieces)

    def _encoded(self, encoding: Encoding, cut: bool) -> Encoded:
        ids = np.asarray(encoding.ids, self.id_dtype)
        if self.has_template:
            sources = np.asarray([SPECIAL if s is None else s for s in encoding.sequence_ids], np.int8)
            type_ids = np.asarray(encoding.type_ids, self.id_dtype)
        else:  # no post-processor: one text, no specials, one segment
            sources, type_ids = np.zeros(len(ids), np.int8), np.zeros(len(ids), self.id_dtype)
        return Encoded(ids, encoding.tokens, encoding.offsets, cut, type_ids, sources)
