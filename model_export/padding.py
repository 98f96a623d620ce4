"""How an imported model may be padded and how long its sequences may be: the ``Layout`` of its graph.

- A mask input: ``padding: "mask"``, if padding really changes no answer (measured); otherwise the graph feeds the
  model an all-ones mask and is never padded (``"none"``).
- No mask input but the token embedding masks id 0 (``Embedding(mask_zero=True)``), or a SavedModel whose answers
  padding with 0 does not change (measured): ``"pad_id"`` with pad id 0.
- Otherwise ``"none"``: the service batches only sequences of one length for it.
A graph of one fixed length is always padded to it, as the model was trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_export.inspection import Plan
from model_export.loading import ImportFailure, Source
from model_export.text import Text
from model_export.tokenization import pad_rows

PAD_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Layout:
    """Padding, pad id, lengths and id range of the exported graph, and why that padding."""

    padding: str
    pad_id: int
    fixed_length: int | None
    max_len: int
    vocab_size: int
    reason: str


def choose_layout(source: Source, plan: Plan, model_text: Text, max_len: int | None) -> Layout:
    """Decide the layout (raise ``ImportFailure`` where the longest sequence or the id range do not fit)."""
    longest = _max_len(source, plan, max_len, model_text.sequence_length)
    vocab_size = _vocab_size(plan, model_text)
    padding, pad_id, reason = _padding(source, plan, model_text, vocab_size, longest)
    return Layout(padding, pad_id, source.fixed_length, longest, vocab_size, reason)


def _max_len(source: Source, plan: Plan, asked: int | None, preprocessed: int | None) -> int:
    """``--max-len``, else the fixed input length, else the sequence length of the preprocessor the model came with
    (what its own ``predict`` cuts texts to), else the position embedding's size."""
    fixed, limit = source.fixed_length, plan.position_limit
    if asked is not None:
        if fixed and asked != fixed:
            raise ImportFailure(f"--max-len {asked}: the model takes exactly {fixed} tokens")
        if limit and asked > limit:
            raise ImportFailure(f"--max-len {asked}: the model's position embedding holds {limit} positions")
        return asked
    if fixed or preprocessed or limit:
        return int(fixed or min(preprocessed or limit or 0, limit or preprocessed or 0))
    raise ImportFailure(
        "cannot tell the longest sequence the model accepts (no fixed input length, no position embedding): "
        "pass --max-len N"
    )


def _vocab_size(plan: Plan, model_text: Text) -> int:
    if plan.token_vocabulary is None:
        return model_text.vocab_size
    if model_text.vocab_size > plan.token_vocabulary:
        raise ImportFailure(
            f"the tokenizer has {model_text.vocab_size} tokens, the model's token embedding only "
            f"{plan.token_vocabulary}: they do not belong together"
        )
    return plan.token_vocabulary


def _padding(source: Source, plan: Plan, model_text: Text, vocab_size: int, longest: int) -> tuple[str, int, str]:
    text_pad = model_text.pad_id if model_text.pad_id is not None else 0
    if source.fixed_length:
        padding, pad_id = (
            ("mask", text_pad) if source.has_mask else ("pad_id", 0) if plan.masks_zero else ("none", text_pad)
        )
        return padding, pad_id, f"fixed length {source.fixed_length}: always padded to it, as in training"
    if source.has_mask:
        if _pads_safely(source, plan, text_pad, vocab_size, longest):
            return "mask", text_pad, "the model takes a mask input"
        return "none", text_pad, "padding changes the answers although the model takes a mask: fed all ones"
    if plan.masks_zero or source.kind == "saved_model":
        if _pads_safely(source, plan, 0, vocab_size, longest):
            why = "Embedding(mask_zero=True)" if plan.masks_zero else "measured"
            return "pad_id", 0, f"padding with id 0 changes no answer ({why})"
        return "none", text_pad, "padding with id 0 changes the answers (measured): never padded"
    return "none", text_pad, "no mask: padding would change the answers, so never padded"


def _pads_safely(source: Source, plan: Plan, pad_id: int, vocab_size: int, longest: int) -> bool:
    """Whether two rows padded together get exactly (±1e-5) the answers each gets alone."""
    width = min(8, longest)
    if width < 3:
        return False
    rng = np.random.default_rng(11)
    rows = [rng.integers(1, max(vocab_size, 3), size=n) for n in (2, width - 1)]
    rows = [np.where(row == pad_id, (pad_id + 1) % vocab_size, row).astype(np.int32) for row in rows]
    ids, mask = pad_rows(rows, pad_id, width)
    together = _probabilities(source, plan, ids, mask)
    alone = [_probabilities(source, plan, row[None, :], np.ones((1, len(row)), np.int32))[0] for row in rows]
    return bool(all(np.max(np.abs(together[i] - alone[i])) <= PAD_TOLERANCE for i in range(2)))


def _probabilities(source: Source, plan: Plan, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    outputs = source.call(ids, mask)
    return np.asarray(outputs[plan.probabilities], dtype=np.float64)
