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


# ---- faithfulness (ERASER: DeYoung et al., 2020), the same code the benchmark scores every explanation with ----

FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)  # ERASER's bins: the top 1, 5, 10, 20 and 50 % of tokens


def top_positions(scores: np.ndarray, fraction: float, candidates: np.ndarray) -> np.ndarray:
    """The ``fraction`` (at least one) of ``candidates`` with the highest ``scores``, highest first."""
    count = max(1, round(fraction * len(candidates)))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    selected: np.ndarray = order[:count]
    return selected


def erased(ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The sequence without ``positions`` (comprehensiveness: is the prediction lost without the rationale?)."""
    keep = np.ones(len(ids), bool)
    keep[positions] = False
    kept: np.ndarray = ids[keep]
    return kept


def only(ids: np.ndarray, positions: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """The sequence reduced to ``positions`` and the ``fixed`` ones (special tokens), in order (sufficiency: is the
    rationale alone enough?)."""
    keep = np.zeros(len(ids), bool)
    keep[positions] = True
    keep[fixed] = True
    kept: np.ndarray = ids[keep]
    return kept


def aopc(base: float, changed: np.ndarray) -> float:
    """Area over the perturbation curve: the mean drop of the class's probability over the bins."""
    return float(np.mean(base - changed))
