"""Sizes of the picture and its labels, worked out from the prediction (pure; no matplotlib)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from service.picture.client import Explanation

LABEL_CHARS = 14  # longest token label on an axis
TITLE_INCHES = 0.6


def shorten(text: str, most: int) -> str:
    """At most ``most`` characters, with an ellipsis where it was cut."""
    return text if len(text) <= most else text[: most - 1] + "…"


def title_of(explanation: Explanation) -> str:
    """``sentiment v1: positive`` followed by every label's probability, in the model's label order."""
    odds = "   ".join(f"{label} {p:.3f}" for label, p in explanation.probabilities.items())
    return f"{explanation.model} v{explanation.version}: {explanation.label}    ({odds})"


@dataclass(frozen=True)
class Ticks:
    """How to label an axis of tokens: font size (pt), every ``step``-th token, rotation (degrees)."""

    size: float
    step: int
    rotation: int

    def extent_in(self, tokens: Sequence[str]) -> float:
        """Room the labels take below the axis, in inches (their length when upright)."""
        if not self.rotation:
            return self.size * 1.6 / 72
        return max(len(shorten(t, LABEL_CHARS)) for t in tokens) * self.size * 0.62 / 72 + 0.1


def tick_layout(tokens: Sequence[str], span_in: float, largest_pt: float = 9.0) -> Ticks:
    """Label ``tokens`` spread over ``span_in`` inches so that no two labels overlap.

    The font shrinks with the room each token has (never under 5 pt); past that, only every ``step``-th token is
    labelled. Labels stand upright unless the longest fits across its cell.
    """
    room_pt = span_in * 72 / len(tokens)
    size = min(largest_pt, max(5.0, room_pt * 0.8))
    step = max(1, math.ceil(size * 1.15 / room_pt))
    longest = max(len(shorten(t, LABEL_CHARS)) for t in tokens)
    return Ticks(size, step, 0 if longest * size * 0.62 < room_pt * 0.9 else 90)


def panel_inches(length: int) -> float:
    """Side of one self-attention heatmap: grows with the sequence, within readable bounds."""
    return min(max(0.17 * length + 1.0, 2.6), 6.5)


@dataclass(frozen=True)
class Layout:
    """Sizes in inches of the figure's parts (title, token strips, heatmap grid) and the strips' labels."""

    width: float
    strips: float
    grid: float
    strip_ticks: Ticks

    @property
    def height(self) -> float:
        return TITLE_INCHES + self.strips + self.grid


def layout_for(explanation: Explanation) -> Layout:
    tokens, matrices = explanation.tokens, explanation.self_attention
    layers, heads = matrices.shape[:2] if matrices is not None else (0, 0)
    panel = panel_inches(len(tokens))
    width = max(heads * (panel + 0.35) + 1.8, 9.0)
    ticks = tick_layout(tokens, width - 2.6)
    rows = 1 + (explanation.rollout is not None) + (explanation.occlusion is not None)
    strips = rows * (0.7 + ticks.extent_in(tokens)) + 0.4  # each: cells, labels and a gap; then the quoted text
    return Layout(width, strips, layers * (panel + 0.55), ticks)
