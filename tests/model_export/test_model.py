from __future__ import annotations

import numpy as np

from model_export.config import ModelConfig
from model_export.model import build_model

CONFIG = ModelConfig(vocab_size=50, max_len=12, d_model=16, num_heads=2, num_layers=2, ff_dim=32, num_classes=3)


def test_model_outputs_have_the_exported_shapes_and_masks() -> None:
    model = build_model(CONFIG)
    ids = np.array([[3, 4, 5, 6, 7], [8, 9, 0, 0, 0]], dtype=np.int32)
    mask = (ids > 0).astype(np.int32)
    out = {k: np.asarray(v) for k, v in model({"input_ids": ids, "attention_mask": mask}).items()}
    assert out["probabilities"].shape == (2, 3)
    assert out["attention"].shape == (2, 5)
    assert out["self_attention"].shape == (2, 2, 2, 5, 5)
    np.testing.assert_allclose(out["probabilities"].sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(out["attention"].sum(-1), 1, atol=1e-5)
    assert np.all(out["attention"][1, 2:] == 0)
    assert np.all(out["self_attention"][1, :, :, :, 2:] == 0)


def test_config_rejects_impossible_sizes() -> None:
    import pytest

    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=10, num_heads=3)
    with pytest.raises(ValueError, match="two classes"):
        ModelConfig(num_classes=1)
