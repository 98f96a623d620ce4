"""Custom layers of the test users' models; each builder passes this file as ``--custom-objects``."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="user_models")
class TokenAndPosition(layers.Layer):
    """Token embedding plus a learned position embedding of ``max_len`` positions (as in the keras-io example)."""

    def __init__(self, vocab_size: int, max_len: int, dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab_size, self.max_len, self.dim = vocab_size, max_len, dim
        self.tokens = layers.Embedding(vocab_size, dim)
        self.positions = layers.Embedding(max_len, dim)

    def build(self, input_shape: Any) -> None:
        self.tokens.build(input_shape)
        self.positions.build((input_shape[-1],))

    def call(self, ids: Any) -> Any:
        return self.tokens(ids) + self.positions(ops.arange(ops.shape(ids)[-1]))[None]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocab_size": self.vocab_size, "max_len": self.max_len, "dim": self.dim}


@keras.saving.register_keras_serializable(package="user_models")
class EncoderBlock(layers.Layer):
    """A MultiHeadAttention nested in a custom layer, masked by the padding mask, with a residual."""

    def __init__(self, dim: int, heads: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.heads = dim, heads
        self.attention = layers.MultiHeadAttention(heads, dim // heads, name="nested_mha")
        self.norm = layers.LayerNormalization()

    def build(self, x_shape: Any, padding_shape: Any) -> None:
        self.attention.build(x_shape, x_shape)
        self.norm.build(x_shape)

    def call(self, x: Any, padding: Any) -> Any:
        pairs = ops.cast(padding[:, None, :], "bool")
        return self.norm(x + self.attention(x, x, attention_mask=pairs))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "heads": self.heads}


@keras.saving.register_keras_serializable(package="user_models")
class MaskedMean(layers.Layer):
    """Mean of the token states over the real tokens."""

    def call(self, x: Any, mask: Any) -> Any:
        weights = ops.cast(mask, x.dtype)[:, :, None]
        return ops.sum(x * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="user_models")
class PoolingAttention(layers.Layer):
    """Learned scores over the tokens, softmax (padding masked through the Keras mask), weighted sum and weights."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True
        self.score = layers.Dense(1)

    def build(self, input_shape: Any) -> None:
        self.score.build(input_shape)

    def call(self, x: Any, mask: Any = None) -> tuple[Any, Any]:
        scores = ops.squeeze(self.score(x), -1)
        if mask is not None:
            scores = ops.where(mask, scores, -1e9)
        weights = ops.softmax(scores, axis=-1)
        return ops.sum(x * weights[:, :, None], axis=1), weights

    def compute_mask(self, x: Any, mask: Any = None) -> None:
        return None


@keras.saving.register_keras_serializable(package="user_models")
class Noise(layers.Layer):
    """Random noise at inference: such a model cannot match its export (the parity gate must refuse it)."""

    def call(self, x: Any) -> Any:
        import tensorflow as tf

        return x + tf.random.uniform(tf.shape(x))
