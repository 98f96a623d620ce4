"""Overload: a full queue and too many requests in progress are refused at once with 503 + Retry-After;
a request still queued at its deadline is answered with a timeout instead of running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from tests.conftest import settings_for

pytestmark = pytest.mark.anyio


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop until the condition holds (bounded)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_full_queue_refuses_at_once_and_the_deadline_answers_the_queued(
    make_repository: Callable[..., Path],
) -> None:
    # A batch of 8 can never fill a queue of 4, so with a one-minute queue delay the first request stays queued.
    settings = settings_for(
        make_repository(), max_queue_size=4, max_instances=4, max_batch_size=8, max_queue_delay_ms=60_000
    )
    app = create_app(settings)
    repository = app.state.core.repository
    await repository.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            body = {"instances": ["one", "two", "three", "four"], "parameters": {"timeout_ms": 300}}
            queued = asyncio.ensure_future(client.post("/v1/models/sentiment:predict", json=body))
            await until(lambda: repository.get("sentiment").batcher.depth == 4)
            refused = await client.post("/v1/models/sentiment:predict", json={"instances": ["five"]})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "queue is full" in refused.json()["error"]
            timed_out = await queued
            assert timed_out.status_code == 504
            assert "deadline passed" in timed_out.json()["error"]
            metrics = (await client.get("/metrics")).text
            assert 'outcome="rejected"' in metrics
            assert 'outcome="timeout"' in metrics
    finally:
        await repository.stop()


async def test_requests_past_the_concurrency_limit_are_refused_but_probes_answer(
    make_repository: Callable[..., Path],
) -> None:
    app = create_app(settings_for(make_repository(), max_concurrency=1))
    await app.state.core.repository.start()
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"instances": '
        await release.wait()
        yield b'["finally"]}'

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            headers = {"Content-Type": "application/json"}
            first = asyncio.ensure_future(
                client.post("/v1/models/sentiment:predict", content=slow_body(), headers=headers)
            )
            registry = app.state.core.metrics.registry
            sample = ("attention_serve_requests_in_progress", {"protocol": "native"})
            await until(lambda: registry.get_sample_value(*sample) == 1)
            busy = await client.post("/v1/models/sentiment:predict", json={"instances": ["second"]})
            assert busy.status_code == 503
            assert busy.headers["retry-after"] == "1"
            assert "limit of requests in progress" in busy.json()["error"]
            assert (await client.get("/v2/health/ready")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200
            release.set()
            assert (await first).status_code == 200
            assert (await client.post("/v1/models/sentiment:predict", json={"instances": ["third"]})).status_code == 200
    finally:
        await app.state.core.repository.stop()
