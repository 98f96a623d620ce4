from __future__ import annotations

import numpy as np
import pytest

from service.explain import FRACTIONS, aopc, attention_rollout, erased, only, top_positions


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


def test_top_positions_ranks_candidates_only_and_keeps_at_least_one() -> None:
    scores = np.array([9.0, 0.1, 0.7, 0.3, 0.5, 9.0])  # 0 and 5 are special tokens: never ranked
    candidates = np.array([1, 2, 3, 4])
    assert top_positions(scores, 0.5, candidates).tolist() == [2, 4]
    assert top_positions(scores, 0.01, candidates).tolist() == [2]
    assert top_positions(scores, 1.0, candidates).tolist() == [2, 4, 3, 1]


def test_erased_and_only_are_complements_around_the_special_tokens() -> None:
    ids = np.array([101, 7, 8, 9, 102])
    top = np.array([2, 3])
    assert erased(ids, top).tolist() == [101, 7, 102]
    assert only(ids, top, np.array([0, 4])).tolist() == [101, 8, 9, 102]


def test_aopc_is_the_mean_drop_over_the_bins() -> None:
    assert aopc(0.9, np.array([0.5, 0.7, 0.9])) == pytest.approx(0.2)
    assert aopc(0.5, np.array([0.6])) == pytest.approx(-0.1)
    assert len(FRACTIONS) == 5
