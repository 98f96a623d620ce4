"""Drawing with matplotlib, on the Agg canvas; pyplot and its global state are never used."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from service.picture.client import Explanation
from service.picture.layout import LABEL_CHARS, Ticks, layout_for, panel_inches, shorten, tick_layout, title_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

COLOURS = "Blues"  # ColorBrewer's sequential blues, as on the /ui page
DIVERGING = "RdBu"  # ColorBrewer's red-white-blue for what changed the prediction: blue toward the class, red against
ANNOTATE_MOST = 24  # write the weights in the token strips up to this many tokens


def draw(explanation: Explanation) -> Figure:
    """The whole picture as a matplotlib Figure on the Agg canvas (pyplot and its global state are never used)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layout = layout_for(explanation)
    figure = Figure(figsize=(layout.width, layout.height), layout="constrained")
    FigureCanvasAgg(figure)
    # Every text and token is drawn as typed (parse_math=False): "$5 and $6" is not mathtext.
    figure.suptitle(title_of(explanation), fontsize=14, fontweight="bold", parse_math=False)
    matrices = explanation.self_attention
    heights = [layout.strips] if matrices is None else [layout.strips, layout.grid]
    parts = figure.subfigures(len(heights), 1, squeeze=False, height_ratios=heights)
    draw_strips(parts[0, 0], explanation, layout.strip_ticks)
    if matrices is not None:
        draw_heatmaps(parts[1, 0], explanation.tokens, matrices)
    return figure


def draw_strips(where: SubFigure, explanation: Explanation, ticks: Ticks) -> None:
    """The tokens in order, each cell shaded by its weight (pooling attention, then rollout), 0 to the largest."""
    note = "  (truncated to the model's maximum length)" if explanation.truncated else ""
    where.suptitle(f"“{shorten(explanation.text, 150)}”{note}", fontsize=10, color="#444444", parse_math=False)
    rows = [("pooling attention", explanation.attention)]
    if explanation.rollout is not None:
        rows.append(("rollout", explanation.rollout))
    if explanation.occlusion is not None:
        rows.append((f"what changed it\n(toward {explanation.label})", explanation.occlusion))
    axes = where.subplots(len(rows), 1, squeeze=False)[:, 0]
    positions = list(range(0, len(explanation.tokens), ticks.step))
    labels = [shorten(explanation.tokens[i], LABEL_CHARS) for i in positions]
    for ax, (name, weights) in zip(axes, rows, strict=True):
        signed = name.startswith("what changed")
        top = (float(np.abs(weights).max()) or 1.0) if signed else float(weights.max())
        low, colours = (-top, DIVERGING) if signed else (0.0, COLOURS)
        image = ax.imshow(weights[None, :], cmap=colours, vmin=low, vmax=top, aspect="auto")
        ax.set_yticks([0], [name], fontsize=10)
        ax.set_xticks(positions, labels, fontsize=ticks.size, rotation=ticks.rotation, parse_math=False)
        ax.tick_params(length=0)
        if len(weights) <= ANNOTATE_MOST:
            annotate(ax, np.abs(weights) if signed else weights, top, weights)
        where.colorbar(image, ax=ax, pad=0.01, fraction=0.025, aspect=6, format="%.3g")


def annotate(ax: Axes, strength: np.ndarray, top: float, shown: np.ndarray) -> None:
    """Write each value (``shown``) in its cell, white where the colour is dark (``strength`` near ``top``)."""
    for i, (weight, value) in enumerate(zip(strength, shown, strict=True)):
        dark = top > 0 and weight / top > 0.55
        ax.text(i, 0, f"{value:.3f}", ha="center", va="center", fontsize=8, color="white" if dark else "#1b1f24")


def draw_heatmaps(where: SubFigure, tokens: Sequence[str], matrices: np.ndarray) -> None:
    """A row of heatmaps per layer, one per head (row token attends to column token), one colour bar per layer.

    Heads of a layer share a scale (0 to the layer's largest weight), so they compare at a glance; layers get
    their own, since later layers are often much flatter and would otherwise read as blank.
    """
    layers, heads, count, _ = matrices.shape
    ticks = tick_layout(tokens, panel_inches(count))
    positions = list(range(0, count, ticks.step))
    labels = [shorten(tokens[i], LABEL_CHARS) for i in positions]
    axes = where.subplots(layers, heads, squeeze=False, sharex=True, sharey=True)
    for layer in range(layers):
        top = float(matrices[layer].max())
        for head in range(heads):
            ax = axes[layer, head]
            image = ax.imshow(matrices[layer, head], cmap=COLOURS, vmin=0.0, vmax=top, interpolation="nearest")
            ax.set_title(f"layer {layer + 1} · head {head + 1}", fontsize=10)
            ax.set_xticks(positions, labels, fontsize=ticks.size, rotation=90, parse_math=False)
            ax.set_yticks(positions, labels, fontsize=ticks.size, parse_math=False)
            ax.tick_params(length=2)
            ax.label_outer()
        where.colorbar(image, ax=list(axes[layer]), pad=0.01, fraction=0.02, aspect=15, format="%.3g")
    where.supxlabel("attends to (key token)", fontsize=10)
    where.supylabel("token (query)", fontsize=10)


def save_png(explanation: Explanation, output: Path, dpi: int) -> tuple[int, int]:
    """Draw and write the PNG; returns its size in pixels."""
    figure = draw(explanation)
    with warnings.catch_warnings():
        # A glyph the bundled font lacks (an emoji in the text) is drawn as a box; that is not worth a warning.
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        figure.savefig(output, format="png", dpi=dpi, metadata={"Software": "attention-serve"})
    width, height = figure.get_size_inches() * dpi
    return round(width), round(height)
