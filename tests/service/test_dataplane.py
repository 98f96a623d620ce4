"""Batching across requests and padding, end to end through the data plane and the ASGI app."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from service import dataplane
from service.app import build_state, create_app
from service.dataplane import InferenceRequest
from tests.conftest import settings_for

pytestmark = pytest.mark.anyio
TEXTS = [
    "ok",
    "the car drove itself to the shop and back without any trouble at all, which is impressive",
    "not sure how i feel about this",
    "never getting in one of those things",
]
EVERYTHING = frozenset({"attention", "self_attention", "rollout"})


def batch_counts(metrics_text: str) -> tuple[float, float]:
    """(number of batches, sequences in them) from the batch-size histogram."""
    lines = dict(
        line.rsplit(" ", 1) for line in metrics_text.splitlines() if line.startswith("attention_serve_batch_size_")
    )
    key = '{model="sentiment",version="1"}'
    return float(lines[f"attention_serve_batch_size_count{key}"]), float(lines[f"attention_serve_batch_size_sum{key}"])


@pytest.mark.parametrize("split_min", [0, 1, 2])  # one call; four calls of one; two calls of two, by length
async def test_mixed_lengths_in_one_batch_match_each_sequence_alone(
    make_repository: Callable[..., Path], split_min: int
) -> None:
    state = build_state(settings_for(make_repository(), batch_split_min=split_min))
    await state.repository.start()
    try:
        together = await state.dataplane.infer(InferenceRequest("sentiment", None, TEXTS, EVERYTHING))
        assert batch_counts(state.metrics.render().decode()) == (1.0, 4.0)
        for text, batched in zip(TEXTS, together.predictions, strict=True):
            alone = (await state.dataplane.infer(InferenceRequest("sentiment", None, [text], EVERYTHING))).predictions[
                0
            ]
            assert batched.length == alone.length
            for name in ("probabilities", "attention", "self_attention", "rollout"):
                np.testing.assert_allclose(getattr(batched, name), getattr(alone, name), atol=1e-5, err_msg=name)
    finally:
        await state.repository.stop()


async def test_concurrent_requests_merge_into_one_batch_and_each_gets_its_own_rows(
    make_repository: Callable[..., Path],
) -> None:
    root = make_repository()
    app = create_app(settings_for(root, max_batch_size=len(TEXTS), max_queue_delay_ms=60_000))
    reference = build_state(settings_for(root))  # no queue delay: each text alone
    repository = app.state.core.repository
    await repository.start()
    await reference.repository.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:

            async def ask(text: str) -> dict:
                response = await client.post("/v1/models/sentiment:predict", json={"instances": [text]})
                assert response.status_code == 200
                return response.json()["predictions"][0]

            # The queue delay is a minute: only a full batch of all four requests can answer them in time.
            answers = await asyncio.wait_for(asyncio.gather(*(ask(t) for t in TEXTS)), timeout=30)
            assert batch_counts((await client.get("/metrics")).text) == (1.0, 4.0)
        for text, answer in zip(TEXTS, answers, strict=True):
            alone = (await reference.dataplane.infer(InferenceRequest("sentiment", None, [text]))).predictions[0]
            assert answer["tokens"] == alone.tokens
            np.testing.assert_allclose(list(answer["probabilities"].values()), alone.probabilities, atol=1e-5)
            np.testing.assert_allclose(answer["attention"], alone.attention, atol=1e-5)
    finally:
        await repository.stop()
        await reference.repository.stop()


async def test_rollout_is_computed_off_the_event_loop(
    make_repository: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rollout multiplies a T × T matrix per layer (0.17 s at 512 tokens on a BERT-base model, idle; more under
    load): on the loop's thread it would hold up health checks and every other request of the worker."""
    threads: list[int] = []
    original = dataplane.attention_rollout

    def recorded(self_attention: np.ndarray, pooling: np.ndarray) -> np.ndarray:
        threads.append(threading.get_ident())
        return original(self_attention, pooling)

    monkeypatch.setattr(dataplane, "attention_rollout", recorded)
    state = build_state(settings_for(make_repository()))
    await state.repository.start()
    try:
        result = await state.dataplane.infer(InferenceRequest("sentiment", None, TEXTS[:2], EVERYTHING))
        assert len(threads) == 2
        assert threading.get_ident() not in threads
        assert all(p.rollout is not None and abs(float(p.rollout.sum()) - 1.0) < 1e-5 for p in result.predictions)
    finally:
        await state.repository.stop()
