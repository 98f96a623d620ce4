"""Overload: a full queue and too many requests in progress are refused at once with 503 + Retry-After;
a request still queued at its deadline is answered with a timeout instead of running."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from tests.conftest import settings_for
from tests.service.test_v2 import binary_request, length_prefixed

pytestmark = pytest.mark.anyio


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop until the condition holds (bounded)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


@contextlib.asynccontextmanager
async def full_queue(
    root: Path, timeout_ms: int
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncio.Future[httpx.Response]]]:
    """A client of an app whose queue (4 sequences) is full: the request holding it waits until ``timeout_ms``.

    A batch of 8 can never fill a queue of 4, so with a one-minute queue delay the first request stays queued.
    """
    settings = settings_for(root, max_queue_size=4, max_instances=4, max_batch_size=8, max_queue_delay_ms=60_000)
    app = create_app(settings)
    repository = app.state.core.repository
    await repository.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            body = {"instances": ["one", "two", "three", "four"], "parameters": {"timeout_ms": timeout_ms}}
            queued = asyncio.ensure_future(client.post("/v1/models/sentiment:predict", json=body))
            await until(lambda: repository.get("sentiment").batcher.depth == 4)
            yield client, queued
    finally:
        await repository.stop()


async def test_full_queue_refuses_at_once_and_the_deadline_answers_the_queued(
    make_repository: Callable[..., Path],
) -> None:
    async with full_queue(make_repository(), timeout_ms=300) as (client, queued):
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


async def test_what_the_request_itself_gets_wrong_is_a_400_even_when_the_queue_is_full(
    make_repository: Callable[..., Path],
) -> None:
    """A 503 says "retry": a request that can never run must hear why at once, whatever the load."""
    async with full_queue(make_repository(), timeout_ms=2_000) as (client, queued):
        wrong = [
            ({"instances": ["x"] * 5}, "5 sequences, more than the limit of 4"),
            ({"instances": ["word " * 200]}, "more than the model's maximum of 128"),
            ({"instances": [[5, 9000]]}, "token id 9000 is outside the vocabulary"),
            ({"instances": ["ok"], "parameters": {"attention": "heads"}}, "parameters.attention"),
        ]
        for bad, fragment in wrong:
            response = await client.post("/v1/models/sentiment:predict", json=bad)
            assert response.status_code == 400, response.text
            assert fragment in response.json()["error"]
        full = await client.post("/v1/models/sentiment:predict", json={"instances": ["fine"]})
        assert full.status_code == 503  # only what waiting can cure
        assert (await queued).status_code == 504


MANY = ["a short text"] * 5_000  # more than MAX_QUEUE_SIZE (4,096) and MAX_INSTANCES (256), the defaults


def _v2_binary(texts: list[str]) -> tuple[bytes, dict[str, str]]:
    data = length_prefixed(texts)
    parameters = {"binary_data_size": len(data)}
    header = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "parameters": parameters}]}
    content, headers = binary_request(header, data)
    return content, {**headers, "Content-Type": "application/octet-stream"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models/sentiment:predict", {"instances": MANY}),
        ("/v1/models/sentiment:predict", {"inputs": {"text": MANY}}),
        (
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [5000], "data": MANY}]},
        ),
        ("/v2/models/sentiment/infer", None),
    ],
)
async def test_a_request_larger_than_the_queue_is_a_400_not_a_retry(
    make_repository: Callable[..., Path], path: str, body: dict | None
) -> None:
    app = create_app(settings_for(make_repository()))  # the default limits
    await app.state.core.repository.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            if body is None:
                content, headers = _v2_binary(MANY)
                response = await client.post(path, content=content, headers=headers)
            else:
                response = await client.post(path, json=body)
        assert response.status_code == 400, response.text
        assert "retry-after" not in response.headers
        assert "5000 sequences, more than the limit of 256" in response.json()["error"]
    finally:
        await app.state.core.repository.stop()
