"""Reach the attention inside a user's Keras model, and bring it to the signature's normalised form.

Re-tracing a built functional model symbolically with ``return_attention_scores=True`` fails for
``MultiHeadAttention`` (docs in STACK_NOTES). Calling the layer with it on real tensors works, in eager mode
and inside the ``tf.function`` tf2onnx converts. So while the model runs, ``capturing`` replaces the ``call``
of the chosen layer *instances* (nothing else, and only inside the ``with``): a stock attention layer is called
with ``return_attention_scores=True``, its scores are recorded and only its usual output goes on, so the
prediction is computed exactly as before; any other chosen layer has its inputs and outputs recorded. This
reaches layers nested in custom layers and sub-models too, in the order they run.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

SCORES = "return_attention_scores"


@dataclass(frozen=True)
class Call:
    """One call of a captured layer: its first input and its outputs (flattened), in call order."""

    layer: keras.layers.Layer
    inputs: Any
    outputs: tuple[Any, ...]


def offers_scores(layer: keras.layers.Layer) -> bool:
    """A layer whose ``call`` returns its attention scores when asked (``return_attention_scores=True``)."""
    return SCORES in inspect.signature(type(layer).call).parameters


def is_stock_attention(layer: keras.layers.Layer) -> bool:
    """An attention layer ``capturing`` asks for its scores: one whose ``call`` returns them when asked (Keras'
    ``MultiHeadAttention``, ``GroupQueryAttention``, ``Attention``, keras-hub's ``DisentangledSelfAttention``), but
    not a block that merely passes on the scores of an attention layer inside it (keras-hub's ``TransformerEncoder``):
    the inner layer is the one recorded."""
    return offers_scores(layer) and not any(offers_scores(sub) for sub in layer._flatten_layers(include_self=False))


@contextlib.contextmanager
def capturing(layers: Sequence[keras.layers.Layer]) -> Iterator[list[Call]]:
    """Record every call of ``layers`` while the block runs (see the module docstring); restore on exit."""
    calls: list[Call] = []
    patched: list[tuple[keras.layers.Layer, Any]] = []
    try:
        for layer in dict.fromkeys(layers):  # each instance once
            own = vars(layer).get("call")  # an instance may carry its own call already: keep it
            layer.call = _recording(layer, own or type(layer).call.__get__(layer), calls)
            patched.append((layer, own))
        yield calls
    finally:
        for layer, own in patched:
            if own is None:
                del layer.call  # the class's call again
            else:
                layer.call = own


@contextlib.contextmanager
def disturbing(layer: keras.layers.Layer, ordinal: int) -> Iterator[list[bool]]:
    """While the block runs, the ``ordinal``-th call of ``layer`` (0: its first) has its output (the first one, if it
    returns several) changed at every position but the first: a prediction that stays the same reads only the first
    position after that call. The list yielded says whether the change was made."""
    seen, done = [0], [False]
    own = vars(layer).get("call")
    original = own or type(layer).call.__get__(layer)

    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        outputs = original(*args, **kwargs)
        seen[0] += 1
        several = isinstance(outputs, (tuple, list))
        first = outputs[0] if several else outputs
        if seen[0] - 1 != ordinal or len(getattr(first, "shape", ())) < 3:
            return outputs
        done[0] = True
        changed = tf.concat([first[:, :1], first[:, 1:] * 0.5 + 1.0], axis=1)
        return (changed, *outputs[1:]) if several else changed

    layer.call = call
    try:
        yield done
    finally:
        if own is None:
            del layer.call
        else:
            layer.call = own


def _recording(layer: keras.layers.Layer, original: Any, calls: list[Call]) -> Any:
    stock = is_stock_attention(layer)

    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        asked = bool(kwargs.get(SCORES, False))
        if stock:
            kwargs[SCORES] = True
        outputs = original(*args, **kwargs)
        first = args[0] if args else next(iter(kwargs.values()), None)
        if stock:
            calls.append(Call(layer, first, (outputs[1],)))
            return outputs if asked else outputs[0]
        calls.append(Call(layer, first, tuple(keras.tree.flatten(outputs))))
        return outputs

    return call


def as_heads(weights: tf.Tensor) -> tf.Tensor:
    """``[B, T, T]`` (one head) or ``[B, H, T, T]`` → ``[B, H, T, T]``, float32."""
    weights = tf.cast(weights, tf.float32)
    return weights[:, None] if weights.shape.rank == 3 else weights


def stack_layers(maps: Sequence[tf.Tensor]) -> tf.Tensor:
    """The layers' ``[B, H, T, T]`` maps as ``[B, L, H, T, T]`` (BLHTT), in graph order."""
    return tf.stack([as_heads(m) for m in maps], axis=1)


def received(last: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
    """Attention each token receives in one layer: the mean over the heads and the real queries, ``[B, T]``.

    Padding keys get 0 and the rest sums to 1 (renormalised over the real tokens, as the signature says).
    """
    per_key = tf.einsum("bq,bqk->bk", real, tf.reduce_mean(as_heads(last), axis=1))  # summed over real queries
    return only_real(per_key, real)  # renormalised: the sum's scale (the count of real queries) cancels


def first_row(last: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
    """Attention of the first position ([CLS], <s>) over the tokens in one layer, averaged over the heads, ``[B, T]``:
    what a classifier that reads that position looked at last."""
    return only_real(tf.reduce_mean(as_heads(last), axis=1)[:, 0, :], real)


def only_real(weights: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
    """Per-token weights with padding set to 0 and the real tokens summing to 1."""
    kept = tf.cast(weights, tf.float32) * real
    return kept / tf.maximum(tf.reduce_sum(kept, axis=1, keepdims=True), 1e-12)
