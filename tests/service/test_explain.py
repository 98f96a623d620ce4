from __future__ import annotations

import numpy as np

from service.explain import attention_rollout


def test_rollout_of_self_attending_layers_is_the_pooling_attention() -> None:
    length = 4
    identity = np.broadcast_to(np.eye(length, dtype=np.float32), (2, 3, length, length))
    pooling = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    np.testing.assert_allclose(attention_rollout(identity, pooling), pooling, atol=1e-6)


def test_rollout_follows_attention_through_the_residual() -> None:
    # One layer, one head: token 0 attends entirely to token 1. With the residual, row 0 is [0.5, 0.5].
    attention = np.array([[[[0.0, 1.0], [0.0, 1.0]]]], dtype=np.float32)
    pooling = np.array([1.0, 0.0], dtype=np.float32)
    np.testing.assert_allclose(attention_rollout(attention, pooling), [0.5, 0.5], atol=1e-6)


def test_rollout_is_a_distribution_over_tokens() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((3, 4, 6, 6))
    attention = (scores / scores.sum(-1, keepdims=True)).astype(np.float32)
    pooling = rng.dirichlet(np.ones(6)).astype(np.float32)
    rollout = attention_rollout(attention, pooling)
    assert rollout.shape == (6,)
    assert np.all(rollout >= 0)
    assert abs(float(rollout.sum()) - 1.0) < 1e-5
