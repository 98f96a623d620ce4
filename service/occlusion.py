"""Occlusion (leave-one-out) attributions: what each token did to the prediction, measured, not inferred.

For a sequence of T tokens the model is run again on T variants, each with one token left out — removed, or, where the
graph takes a fixed length (or nothing would be left), replaced by the tokenizer's mask or unknown token — and each
token gets ``p(class | text) − p(class | text without it)`` for the predicted class (or a ``target`` named in the
request): positive, it pushed the prediction toward the class; negative, against it. The special tokens a template
adds (``[CLS]``, ``[SEP]``, ``<s>``) are not occluded (their value is 0). ``window`` k > 1 leaves out k neighbouring
tokens at a time (each of them gets the window's value): a long text costs T/k variants instead of T.

The variants run through the version's own batcher as *bulk* work (after ordinary requests), so an occlusion's answer
is the model's own on each variant, exactly as if it had been sent alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.errors import InvalidInput
from service.sequences import Checked

REMOVE, REPLACE = "remove", "replace"
MASK_TOKENS = ("[MASK]", "<mask>", "[UNK]", "<unk>")


@dataclass(frozen=True)
class OcclusionAsk:
    """What a request asks of occlusion: the window, and the class to attribute to (None: the predicted one)."""

    window: int = 1
    target: str | int | None = None


WHOLE_TOKENS = OcclusionAsk()


@dataclass(frozen=True)
class Method:
    """How a version occludes: ``remove`` the token, or ``replace`` it with ``replacement`` (an id)."""

    kind: str
    replacement: int | None
    token: str | None

    def describe(self) -> dict[str, object]:
        return {"method": self.kind, "replacement": self.token}


@dataclass(frozen=True)
class Variant:
    """One occluded copy of sequence ``sequence``: its ids (and segments), and which positions it left out."""

    sequence: int
    positions: tuple[int, ...]  # the token positions it leaves out
    ids: np.ndarray
    segments: np.ndarray | None


def method_for(fixed_length: int | None, replacements: dict[str, int | None]) -> Method:
    """Remove tokens, unless the graph takes a fixed length: then replace them with its mask or unknown token."""
    token = next((t for t in MASK_TOKENS if replacements.get(t) is not None), None)
    replacement = replacements.get(token) if token is not None else None
    return Method(REPLACE if fixed_length is not None else REMOVE, replacement, token)


def occludable(sequence: Checked, special_ids: frozenset[int]) -> list[int]:
    """Positions that are words of the text: not the template's special tokens."""
    if sequence.sources is not None:
        return [i for i, source in enumerate(sequence.sources) if source >= 0]
    return [i for i, token in enumerate(sequence.ids) if int(token) not in special_ids]


def variants(index: int, sequence: Checked, positions: list[int], window: int, method: Method) -> list[Variant]:
    """The occluded copies of one sequence, one per window of ``window`` occludable positions."""
    found = []
    for start in range(0, len(positions), window):
        chosen = positions[start : start + window]
        ids, segments = _occluded(sequence, chosen, method)
        found.append(Variant(index, tuple(chosen), ids, segments))
    return found


def _occluded(sequence: Checked, chosen: Sequence[int], method: Method) -> tuple[np.ndarray, np.ndarray | None]:
    removing = method.kind == REMOVE and len(chosen) < len(sequence.ids)
    if removing or method.replacement is None:
        keep = np.ones(len(sequence.ids), bool)
        keep[list(chosen)] = False
        if not keep.any():  # nothing would be left and nothing to replace with: the first token stays
            keep[0] = True
        segments = sequence.segments[keep] if sequence.segments is not None else None
        return sequence.ids[keep], segments
    ids = sequence.ids.copy()
    ids[list(chosen)] = method.replacement
    return ids, sequence.segments


def check(sequences: Sequence[Checked], counts: Sequence[int], limits: tuple[int, int], where: str) -> None:
    """A 400 for a text with more windows than ``max_occlusion_tokens`` or a request whose variants and texts
    together are more sequences than ``max_instances``."""
    longest, total = limits
    for index, count in enumerate(counts):
        if count > longest:
            raise InvalidInput(
                f"{where}[{index}]: occlusion would run {count} variants of this text, more than the limit of "
                f"{longest} (max_occlusion_tokens); cut the text, or leave out several tokens at a time with "
                "parameters.occlusion_window"
            )
    if len(sequences) + sum(counts) > total:
        raise InvalidInput(
            f"{where}: occlusion runs {sum(counts)} variants beside the {len(sequences)} sequences, "
            f"{len(sequences) + sum(counts)} in all, more than the limit of {total} per request; send fewer texts "
            "or use parameters.occlusion_window"
        )


def target_class(target: str | int | None, labels: Sequence[str]) -> int | None:
    """The class index a request attributes to (None: each text's predicted class); a 400 for an unknown one."""
    if target is None:
        return None
    if isinstance(target, int) and 0 <= target < len(labels):
        return target
    if isinstance(target, str) and target in labels:
        return list(labels).index(target)
    raise InvalidInput(f"parameters.target: expected one of the labels {list(labels)} or its index, got {target!r}")


def plan(
    sequences: Sequence[Checked],
    ask: OcclusionAsk,
    method: Method,
    special_ids: frozenset[int],
    limits: tuple[int, int],
    where: str,
) -> list[Variant]:
    """Every variant of every sequence, checked against the limits (``max_occlusion_tokens``, ``max_instances``)."""
    per_sequence = [
        variants(index, sequence, occludable(sequence, special_ids), ask.window, method)
        for index, sequence in enumerate(sequences)
    ]
    check(sequences, [len(found) for found in per_sequence], limits, where)
    return [variant for found in per_sequence for variant in found]


def attributions(
    length: int, found: Sequence[Variant], base: np.ndarray, occluded: Sequence[np.ndarray], target: int
) -> np.ndarray:
    """Per token: the target class's probability with the text, minus without the token's window (0: not occluded)."""
    values = np.zeros(length, np.float32)
    for variant, probabilities in zip(found, occluded, strict=True):
        values[list(variant.positions)] = float(base[target]) - float(probabilities[target])
    return values
