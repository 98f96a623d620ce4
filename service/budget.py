"""How much explanation a request may ask for, and which attention maps it gets: checked before any work.

A request's answer can be far larger than the request: one 512-token text's ``self_attention`` on a BERT-base model is
12 layers × 12 heads × 512² = 37.7 million values (242 MB of JSON). So every request has a budget of returned
attention values (``max_explanation_values``); past it the request is a 400 that says the size asked, the limit and
how to ask for less. ``layers`` and ``heads`` pick the maps a request wants (indices; negative ones count from the
end, ``-1`` the last layer), as a user of a BERT export asks for "the last layer's maps".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.errors import InvalidInput

ATTENTION, SELF_ATTENTION, ROLLOUT, OCCLUSION = "attention", "self_attention", "rollout", "occlusion"
PER_TOKEN = (ATTENTION, ROLLOUT, OCCLUSION)


@dataclass(frozen=True)
class MapChoice:
    """The layers and heads a request asks for (None: all), as sent."""

    layers: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None

    @property
    def chosen(self) -> bool:
        return self.layers is not None or self.heads is not None


@dataclass(frozen=True)
class Maps:
    """The maps a request gets: layer and head indices into the model's ``[L, H]``, checked."""

    layers: np.ndarray
    heads: np.ndarray

    def cut(self, maps: np.ndarray) -> np.ndarray:
        """One sequence's ``[L, H, T, T]`` maps reduced to the chosen layers and heads."""
        return maps[np.ix_(self.layers, self.heads)] if maps.ndim == 4 else maps

    @property
    def count(self) -> int:
        return len(self.layers) * len(self.heads)


def choose_maps(choice: MapChoice, layers_heads: tuple[int, int] | None, where: str) -> Maps | None:
    """The maps ``choice`` names for a model with ``layers_heads`` (None: the model has no maps)."""
    if layers_heads is None:
        if choice.chosen:
            raise InvalidInput(f"{where}: this model has no self-attention maps to choose layers or heads from")
        return None
    layers, heads = (max(n, 1) for n in layers_heads)
    return Maps(_indices(choice.layers, layers, f"{where}.layers"), _indices(choice.heads, heads, f"{where}.heads"))


def _indices(asked: tuple[int, ...] | None, size: int, where: str) -> np.ndarray:
    if asked is None:
        return np.arange(size)
    if not asked:
        raise InvalidInput(f"{where}: name at least one index, or leave it out for all")
    bad = [i for i in asked if not -size <= i < size]
    if bad:
        raise InvalidInput(f"{where}: index {bad[0]} is out of range; the model has {size} (0 to {size - 1}, or -1)")
    chosen = [i % size for i in asked]
    if len(set(chosen)) != len(chosen):
        raise InvalidInput(f"{where}: an index is named twice")
    return np.asarray(chosen)


def values_asked(outputs: frozenset[str], lengths: Sequence[int], maps: Maps | None) -> int:
    """The attention values a request's answer would hold: per-token outputs, and the chosen maps."""
    total = sum(lengths) * len(outputs & set(PER_TOKEN))
    if SELF_ATTENTION in outputs and maps is not None:
        total += maps.count * sum(n * n for n in lengths)
    return total


def check_budget(outputs: frozenset[str], lengths: Sequence[int], maps: Maps | None, limit: int) -> None:
    """A 400 before any work when the answer would hold more than ``limit`` attention values."""
    asked = values_asked(outputs, lengths, maps)
    if asked <= limit:
        return
    detail = ""
    if SELF_ATTENTION in outputs and maps is not None:
        detail = (
            f" (self_attention: {len(maps.layers)} layers x {len(maps.heads)} heads x tokens² over "
            f"{len(lengths)} sequence(s) of up to {max(lengths)} tokens)"
        )
    raise InvalidInput(
        f"the answer would hold {asked:,} attention values{detail}, more than the limit of {limit:,} per request; "
        "ask for less: fewer maps (parameters.layers, parameters.heads, e.g. layers [-1]), fewer or shorter "
        "sequences, or a per-token output (attention, rollout) instead of self_attention"
    )
