"""The tokenizer parity gate: the rebuilt ``tokenizer.json``, as the service will run it, against keras-hub's own
preprocessor, id for id — special tokens, segment ids and truncation included — on a built-in probe set (accents,
other scripts, emoji, CJK, punctuation, numbers, an over-long text, an empty string; single texts and pairs) and on
``--data``'s texts. The import is refused at the first difference, naming the text.

The model's parity check cannot see a wrong tokenizer: it compares ONNX with Keras on ids that tokenizer made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_format.text import TextTokenizer

LONG = " ".join(["the quick brown fox jumps over the lazy dog, again and again"] * 80)
PROBES = (
    "The service works well, and I would use it again.",
    "Café naïve résumé: ACCENTS, Çà et là — über Straße",
    "Ελληνικά, русский текст, עברית, العربية",
    "東京とソウル、北京で会いましょう。中文测试",
    "emoji 😀👍🏽 ❤️ and 🇫🇷 flags",
    "punctuation!!! (yes) [no] {maybe}... \"quoted\" 'single' @user #tag $5 50% a&b",
    "numbers 12345, 3.14159, 1,000,000 and 2026-12-03",
    "  leading and trailing spaces   and\ttabs\nnewlines  ",
    "MiXeD CaSe WoRdS and CAPITALS",
    "an okay day",
    "x",
    "",
    LONG,
)
PAIRS = (
    ("A man is playing a guitar.", "Someone plays an instrument."),
    ("Is this the right answer?", "Café au lait, s'il vous plaît — 東京"),
    (LONG, "a short second text"),
    ("short first", LONG),
    (LONG, LONG),
    ("", "only the second"),
)
BATCH = 64


class TokenizerMismatch(ValueError):
    """The rebuilt tokenizer and keras-hub's preprocessor disagree; the message names the first text."""


@dataclass(frozen=True)
class Report:
    """How many texts and pairs were compared, all equal."""

    texts: int
    pairs: int


def check_tokenizer(preprocessor: Any, served: TextTokenizer, texts: Sequence[str] = ()) -> Report:
    """Compare ``served`` with ``preprocessor`` on the probes and ``texts``; raise ``TokenizerMismatch`` if they
    differ anywhere. ``served.max_length`` must be the preprocessor's sequence length."""
    singles = [*PROBES, *texts]
    for start in range(0, len(singles), BATCH):
        batch = list(singles[start : start + BATCH])
        _compare(batch, _expected(preprocessor, batch, None, served.max_length), served.encode(batch, cut=True))
    pairs = served.pairs and _takes_pairs(preprocessor)
    if pairs:
        firsts, seconds = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
        shown = [f"{a[:30]!r} + {b[:30]!r}" for a, b in PAIRS]
        expected = _expected(preprocessor, firsts, seconds, served.max_length)
        _compare(shown, expected, served.encode_pairs(list(PAIRS), cut=True))
    return Report(len(singles), len(PAIRS) if pairs else 0)


def _takes_pairs(preprocessor: Any) -> bool:
    packer = getattr(preprocessor, "packer", None)
    return packer is not None or not hasattr(preprocessor, "tokenizer")


def _expected(
    preprocessor: Any, firsts: Sequence[str], seconds: Sequence[str] | None, length: int
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """keras-hub's ids and segment ids (None where it makes none) of each text (or pair), without the padding."""
    import tensorflow as tf

    inputs: Any = (
        tf.constant(list(firsts)) if seconds is None else (tf.constant(list(firsts)), tf.constant(list(seconds)))
    )
    packed = _pack(preprocessor, inputs, length)
    ids, mask = np.asarray(packed["token_ids"]), np.asarray(packed["padding_mask"]).astype(bool)
    if "segment_ids" not in packed:  # a model without a segment input: only the ids matter
        return [(ids[row][mask[row]], None) for row in range(len(ids))]
    segments = np.asarray(packed["segment_ids"])
    return [(ids[row][mask[row]], segments[row][mask[row]]) for row in range(len(ids))]


def _pack(preprocessor: Any, inputs: Any, length: int) -> dict[str, Any]:
    if hasattr(preprocessor, "packer"):
        packed: dict[str, Any] = preprocessor(x=inputs)  # a tuple passed positionally would be read as (x, y)
        return packed
    # A bare tokenizer (``--preprocessor`` naming a tokenizer preset): packed as keras-hub's text classifiers pack.
    from model_export import hub

    keras_hub = hub.require()
    packer = keras_hub.layers.MultiSegmentPacker(
        sequence_length=length, start_value=preprocessor.start_token_id, end_value=preprocessor.end_token_id,
        pad_value=getattr(preprocessor, "pad_token_id", 0) or 0,
    )  # fmt: skip
    segments = inputs if isinstance(inputs, tuple) else (inputs,)
    ids, segment_ids = packer(tuple(preprocessor(s) for s in segments))
    return {"token_ids": ids, "padding_mask": ids != packer.pad_value, "segment_ids": segment_ids}


def _compare(
    shown: Sequence[str], expected: Sequence[tuple[np.ndarray, np.ndarray | None]], got: Sequence[Any]
) -> None:
    for text, (ids, segments), encoded in zip(shown, expected, got, strict=True):
        ours = np.asarray(encoded.ids, np.int64)
        if ours.shape != ids.shape or not np.array_equal(ours, ids):
            raise TokenizerMismatch(
                f"tokenizer parity: the rebuilt tokenizer.json and keras-hub's preprocessor disagree on {text[:60]!r}"
                f": keras-hub {_short(ids)}, tokenizer.json {_short(ours)}"
            )
        if segments is not None and not np.array_equal(np.asarray(encoded.type_ids, np.int64), segments):
            raise TokenizerMismatch(f"tokenizer parity: the segment ids of {text[:60]!r} differ from keras-hub's")


def _short(ids: np.ndarray) -> str:
    values = [int(i) for i in ids]
    return str(values) if len(values) <= 16 else f"{values[:16]}… ({len(values)} ids)"
