"""The graph an import exports: the user's model run with its attention recorded, in the signature's form.

``forward`` is what tf2onnx converts (and, run eagerly, the attention the parity check expects); ``reference`` is
what the exported graph must answer: the model's own prediction, called exactly as the user would call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from model_export import feeds, text
from model_export.attention import capturing, first_row, only_real, received, stack_layers
from model_export.inspection import Plan
from model_export.loading import Source
from model_export.padding import Layout
from model_format.signature import ATTENTION, PROBABILITIES, SELF_ATTENTION, Signature
from model_format.text import TextTokenizer


@dataclass(frozen=True)
class Imported:
    """The model ready to export: its source, its text side, what it has, and how its graph is laid out."""

    source: Source
    text: text.Text
    plan: Plan
    layout: Layout
    signature: Signature
    served: TextTokenizer  # the tokenizer exactly as the service will run it


def forward(
    imported: Imported,
    inputs: Mapping[str, tf.Tensor],
    weights: Sequence[tf.Tensor] | None = None,
    maps: bool = True,
) -> dict[str, tf.Tensor]:
    """The exported graph: the model run with its attention recorded, normalised to the signature's outputs.

    ``inputs``: the graph's inputs by name (the signature's); ``weights``: the model's variables as tensors, to run
    it statelessly (how it is converted), or None to run it on its own variables; ``maps``: False for the lean
    graph, which answers without the self-attention maps.
    """
    plan, layout, signature = imported.plan, imported.layout, imported.signature
    ids = inputs[signature.token_ids]
    mask = inputs[signature.mask] if signature.mask else None
    segments = inputs[signature.segments] if signature.segments else None
    with capturing(plan.captured) as calls:
        outputs = imported.source.call(ids, mask, segments, weights)
    probabilities = tf.cast(outputs[plan.probabilities], tf.float32)
    result = {PROBABILITIES: tf.nn.softmax(probabilities, axis=-1) if plan.logits else probabilities}
    real = real_tokens(ids, mask, layout)
    layer_maps = [outputs[m.output] if m.output is not None else calls[m.call or 0].outputs[m.index] for m in plan.maps]
    if layer_maps and maps:
        result[SELF_ATTENTION] = stack_layers(layer_maps)
    if plan.pooling is not None:
        result[ATTENTION] = only_real(outputs[plan.pooling], real)
    elif layer_maps:
        result[ATTENTION] = first_row(layer_maps[-1], real) if plan.reads_first else received(layer_maps[-1], real)
    return result


def real_tokens(ids: tf.Tensor, mask: tf.Tensor | None, layout: Layout) -> tf.Tensor:
    """1.0 on the tokens of the text, 0.0 on padding, as the graph can tell them apart."""
    if mask is not None:
        return tf.cast(mask, tf.float32)
    if layout.padding == "pad_id" or layout.fixed_length is not None:
        return tf.cast(tf.not_equal(ids, layout.pad_id), tf.float32)
    return tf.ones_like(ids, dtype=tf.float32)  # never padded: every token is real


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a ``--logits`` model's output, as the exported graph applies it."""
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def reference(imported: Imported, call: feeds.Feeds) -> dict[str, np.ndarray]:
    """What the exported graph must give: the model's own prediction, and the recorded attention, eagerly."""
    signature = imported.signature
    inputs = {name: tf.constant(call[name]) for name in signature.input_names}
    ids = inputs[signature.token_ids]
    mask = inputs[signature.mask] if signature.mask else None
    segments = inputs[signature.segments] if signature.segments else None
    plain = np.asarray(imported.source.call(ids, mask, segments)[imported.plan.probabilities], dtype=np.float64)
    if imported.plan.logits:
        plain = softmax(plain)
    recorded = forward(imported, inputs)
    expected = {name: np.asarray(value) for name, value in recorded.items() if name != PROBABILITIES}
    return {PROBABILITIES: plain.astype(np.float32), **expected}
