"""Explanations computed from the attention the model returns (pure numpy)."""

from __future__ import annotations

import numpy as np


def attention_rollout(self_attention: np.ndarray, pooling: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020), read out through the pooling attention.

    ``self_attention`` is (layers, heads, T, T) for one sequence, ``pooling`` its (T,) pooling weights. Each
    layer's heads are averaged, the residual connection is added as the identity and rows renormalised; the
    layers are multiplied from the input up. The pooling weights then carry the rolled-out flow from the
    pooled representation back to the input tokens: the result is (T,), non-negative and sums to 1.
    """
    layers, _heads, length, _ = self_attention.shape
    flow = np.eye(length, dtype=np.float64)
    identity = np.eye(length, dtype=np.float64)
    for layer in range(layers):
        mixed = self_attention[layer].astype(np.float64).mean(axis=0) + identity
        mixed /= mixed.sum(axis=-1, keepdims=True)
        flow = mixed @ flow
    relevance = pooling.astype(np.float64) @ flow
    rollout: np.ndarray = (relevance / relevance.sum()).astype(np.float32)
    return rollout
