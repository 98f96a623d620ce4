"""Overload and deadlines over gRPC, with the HTTP app and the clients on this test's event loop and the gRPC server
on its own: the admission limit is shared with HTTP, a full queue is RESOURCE_EXHAUSTED, and a request whose gRPC
deadline passes while queued is DEADLINE_EXCEEDED and never runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.app import create_app
from tests.conftest import settings_for
from tests.e2e.conftest import free_port
from tests.service.grpc_helpers import text_request

pytestmark = pytest.mark.anyio


@dataclass
class Running:
    app: Any
    http: httpx.AsyncClient
    stub: pb_grpc.GRPCInferenceServiceStub


@asynccontextmanager
async def running(root: Path, **settings: Any) -> AsyncIterator[Running]:
    """The app's lifespan (so its gRPC server) on this test's loop, an HTTP client and a gRPC stub."""
    port = free_port()
    app = create_app(settings_for(root, grpc_port=port, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://t") as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            yield Running(app, http, pb_grpc.GRPCInferenceServiceStub(channel))


async def until(condition: Callable[[], bool]) -> None:
    """Poll until the condition holds (bounded): gRPC requests arrive through gRPC's own threads, not this loop."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


def sample(app: Any, name: str, **labels: str) -> float:
    return float(app.state.core.metrics.registry.get_sample_value(name, labels) or 0.0)


async def test_one_admission_limit_covers_http_and_grpc(make_repository: Callable[..., Path]) -> None:
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"instances": '
        await release.wait()
        yield b'["finally"]}'

    async with running(make_repository(), max_concurrency=1) as r:
        headers = {"Content-Type": "application/json"}
        first = asyncio.ensure_future(r.http.post("/v1/models/sentiment:predict", content=slow_body(), headers=headers))
        await until(lambda: r.app.state.core.admission.active == 1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await r.stub.ModelInfer(text_request(["second"]))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of requests in progress" in (refused.value.details() or "")
        assert ("grpc-retry-pushback-ms", "1000") in tuple(refused.value.trailing_metadata() or ())
        assert (await r.stub.ServerReady(pb.ServerReadyRequest())).ready  # probes are exempt
        release.set()
        assert (await first).status_code == 200
        assert (await r.stub.ModelInfer(text_request(["third"]))).model_name == "sentiment"


async def test_full_queue_is_resource_exhausted_and_a_passed_deadline_drops_the_queued(
    make_repository: Callable[..., Path],
) -> None:
    # A batch of 8 never fills from a queue of 4, so with a one-minute queue delay the first request stays queued.
    settings = {"max_queue_size": 4, "max_instances": 4, "max_batch_size": 8, "max_queue_delay_ms": 60_000}
    async with running(make_repository(), **settings) as r:
        repository = r.app.state.core.repository
        queued = asyncio.ensure_future(r.stub.ModelInfer(text_request(["one", "two", "three", "four"]), timeout=1.5))
        await until(lambda: repository.get("sentiment").batcher.depth == 4)
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await r.stub.ModelInfer(text_request(["five"]))
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full" in (full.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await queued
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        def outcomes() -> list[float]:
            labels = {"model": "sentiment", "version": "", "protocol": "grpc"}
            names = ("rejected", "timeout", "cancelled")
            return [sample(r.app, "attention_serve_requests_total", **labels, outcome=o) for o in names]

        # The client's deadline runs out a moment before the server's (its clock started first): wait (bounded)
        # until the server has let the request go, then drain.
        await until(lambda: r.app.state.core.dataplane.active == 0 and sum(outcomes()[1:]) == 1)
        await repository.stop()  # the batcher drains: the expired sequences are skipped, not run
        assert sample(r.app, "attention_serve_inference_count_total", model="sentiment", version="1") == 0
        assert outcomes()[0] == 1
