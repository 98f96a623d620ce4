"""Serving an optimized variant of a version, and falling back to FP32 where a version lacks it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import settings_for

TEXTS = ["what a great ride", "this is the worst app ever", "the car arrived at noon", "meh, could be better"]


def served(client: TestClient) -> tuple[str, np.ndarray]:
    variant = client.get("/v1/models/sentiment/metadata").json()["attention_serve"]["variant"]
    rows = client.post("/v1/models/sentiment:predict", json={"instances": TEXTS}).json()["predictions"]
    return variant, np.array([list(r["probabilities"].values()) for r in rows])


def test_int8_variant_serves_close_to_fp32(make_repository: Callable[..., Path]) -> None:
    root = make_repository()
    with TestClient(create_app(settings_for(root, variant="int8"))) as client:
        variant, int8 = served(client)
    with TestClient(create_app(settings_for(root))) as client:
        reference, fp32 = served(client)
    assert (variant, reference) == ("int8", "fp32")
    assert not np.array_equal(int8, fp32)  # really another graph
    np.testing.assert_allclose(int8, fp32, atol=0.05)
    assert (int8.argmax(-1) == fp32.argmax(-1)).all()


def test_a_version_without_the_variant_serves_fp32(make_repository: Callable[..., Path]) -> None:
    with TestClient(create_app(settings_for(make_repository(), variant="fp16"))) as client:
        assert served(client)[0] == "fp32"
