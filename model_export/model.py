"""The Keras attention classifier: embeddings, encoder blocks, attention pooling, classifier head.

Every layer returns its attention so the exported graph can hand it to the service: the self-attention of
each block (batch, heads, seq, seq) and the pooling weights (batch, seq), which are exactly zero on padding.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from model_export.config import ModelConfig

NEG_INF = -1e9


class TokenAndPositionEmbedding(layers.Layer):
    """Token embedding plus a learned position embedding (positions computed inside ``call``)."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokens = layers.Embedding(vocab_size, d_model)
        self.positions = layers.Embedding(max_len, d_model)

    def call(self, input_ids: Any) -> Any:
        positions = ops.arange(ops.shape(input_ids)[1])
        return self.tokens(input_ids) + self.positions(positions)[None, :, :]


class SelfAttention(layers.Layer):
    """Multi-head self-attention with a key padding mask that returns its attention weights."""

    def __init__(self, d_model: int, num_heads: int, dropout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.qkv = layers.Dense(3 * d_model)
        self.out = layers.Dense(d_model)
        self.drop = layers.Dropout(dropout)

    def call(self, x: Any, key_bias: Any, training: bool = False) -> tuple[Any, Any]:
        batch, seq = ops.shape(x)[0], ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(x), (batch, seq, 3, self.num_heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # (3, batch, heads, seq, head_dim)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (self.head_dim**-0.5)
        weights = ops.softmax(scores + key_bias, axis=-1)
        context = ops.matmul(self.drop(weights, training=training), v)
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (batch, seq, -1))
        return self.out(context), weights


class EncoderBlock(layers.Layer):
    """Pre-norm transformer block: self-attention and a feed-forward network, each with a residual."""

    def __init__(self, config: ModelConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.norm1 = layers.LayerNormalization(epsilon=1e-6)
        self.attention = SelfAttention(config.d_model, config.num_heads, config.dropout)
        self.norm2 = layers.LayerNormalization(epsilon=1e-6)
        self.ff1 = layers.Dense(config.ff_dim, activation="relu")
        self.ff2 = layers.Dense(config.d_model)
        self.drop = layers.Dropout(config.dropout)

    def call(self, x: Any, key_bias: Any, training: bool = False) -> tuple[Any, Any]:
        attended, weights = self.attention(self.norm1(x), key_bias, training=training)
        x = x + self.drop(attended, training=training)
        x = x + self.drop(self.ff2(self.ff1(self.norm2(x))), training=training)
        return x, weights


class AttentionPooling(layers.Layer):
    """Learned scores over the tokens, a masked softmax, and the weighted sum of the token states."""

    def __init__(self, d_model: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project = layers.Dense(d_model, activation="tanh")
        self.score = layers.Dense(1, use_bias=False)

    def call(self, x: Any, mask: Any) -> tuple[Any, Any]:
        scores = ops.squeeze(self.score(self.project(x)), axis=-1)
        weights = ops.softmax(scores + (1.0 - mask) * NEG_INF, axis=-1)
        return ops.sum(x * weights[:, :, None], axis=1), weights


class AttentionClassifier(keras.Model):
    """Sequence classifier whose outputs are probabilities, pooling attention and per-layer self-attention."""

    def __init__(self, config: ModelConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.embed = TokenAndPositionEmbedding(config.vocab_size, config.max_len, config.d_model)
        self.blocks = [EncoderBlock(config, name=f"block_{i}") for i in range(config.num_layers)]
        self.norm = layers.LayerNormalization(epsilon=1e-6)
        self.pool = AttentionPooling(config.d_model)
        self.drop = layers.Dropout(config.dropout)
        self.head = layers.Dense(config.num_classes)

    def call(self, inputs: dict[str, Any], training: bool = False) -> dict[str, Any]:
        mask = ops.cast(inputs["attention_mask"], "float32")
        key_bias = ((1.0 - mask) * NEG_INF)[:, None, None, :]
        x = self.drop(self.embed(inputs["input_ids"]), training=training)
        maps = []
        for block in self.blocks:
            x, weights = block(x, key_bias, training=training)
            maps.append(weights)
        pooled, attention = self.pool(self.norm(x), mask)
        logits = self.head(self.drop(pooled, training=training))
        return {
            "probabilities": ops.softmax(logits, axis=-1),
            "attention": attention,
            "self_attention": ops.stack(maps, axis=1),
        }


def build_model(config: ModelConfig) -> AttentionClassifier:
    """Build the classifier and create its weights with one dummy call."""
    model = AttentionClassifier(config)
    ids = ops.zeros((1, 4), dtype="int32")
    model({"input_ids": ids, "attention_mask": ops.ones((1, 4), dtype="int32")})
    return model
