"""``create_app(settings)``: the FastAPI application, its lifespan, routers and error handlers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__
from service.admission import Admission, AdmissionMiddleware
from service.batching import BatchPolicy
from service.dataplane import DataPlane, Limits
from service.errors import ServiceError
from service.lifecycle import install_stop_hook
from service.metrics import Metrics
from service.protocols import codec, health, model_config, native, repository_api, v2
from service.protocols.deps import AppState
from service.protocols.grpc_server import GrpcServer
from service.protocols.hot import HotRoutes
from service.protocols.ui import install_ui
from service.repository import ModelRepository, RepositoryConfig
from service.runtime import RuntimeOptions
from service.settings import Settings
from service.telemetry import Telemetry, request_id

log = logging.getLogger(__name__)


def build_state(settings: Settings) -> AppState:
    metrics = Metrics()
    repository = ModelRepository(
        RepositoryConfig(
            root=settings.model_repository,
            models=tuple(settings.models) if settings.models is not None else None,
            version_policy=settings.version_policy,
            latest_versions=settings.latest_versions,
            specific_versions=tuple(settings.specific_versions),
            poll_interval_s=settings.poll_interval_s,
            variant=settings.variant,
        ),
        RuntimeOptions(
            providers=tuple(settings.providers) if settings.providers else None,
            intra_op_threads=settings.threads,
            large_model_threads=settings.large_model_threads,
            inter_op_threads=settings.inter_op_threads,
            optimization_level=settings.optimization_level,
            io_binding=settings.io_binding,
            cache_dir=settings.cache_dir,
            require_provider=settings.require_provider,
            allow_spinning=settings.allow_spinning,
            memory_arena=settings.memory_arena,
        ),
        BatchPolicy(
            max_batch_size=settings.max_batch_size,
            max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
            max_queue_size=settings.max_queue_size,
            batches_in_flight=settings.batches_in_flight,
            length_buckets=tuple(sorted(settings.length_buckets)),
            split_min=settings.batch_split_min,
            inline_lone=settings.lone_batch_inline,
            max_batch_tokens=settings.max_batch_tokens,
            inline_max_s=settings.inline_max_ms / 1000.0,
        ),
        lambda name, version, stats: metrics.observe_batch(name, str(version), stats),
        explain_batch_bytes=settings.explain_batch_mb << 20,
    )
    dataplane = DataPlane(
        repository,
        Limits(
            settings.max_instances,
            settings.max_text_chars,
            settings.request_timeout_s,
            settings.max_explanation_values,
            settings.max_occlusion_tokens,
        ),
    )
    telemetry = Telemetry(metrics, settings.log_requests)
    return AppState(settings, repository, dataplane, metrics, telemetry, Admission(settings.max_concurrency))


class RequestIdMiddleware:
    """Takes ``X-Request-ID`` from the client (or makes one), exposes it to logs, and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # A random per-process prefix and a counter: unique, and cheaper than a uuid per request.
        self.prefix, self.counter = os.urandom(6).hex(), itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        rid = given.decode("latin-1")[:128] if given and given.isascii() else f"{self.prefix}-{next(self.counter):x}"
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class ServiceApp(FastAPI):
    """FastAPI behind a front: request ids, admission and the hot routes come before the framework's stack."""

    front: ASGIApp | None = None

    def install_front(self, admission: Admission, routers: Sequence[APIRouter]) -> None:
        """``routers``: those included without a prefix whose ``@hot`` routes the front answers itself."""
        framework = partial(FastAPI.__call__, self)
        hot = HotRoutes(framework, self, [route for router in routers for route in router.routes])
        self.front = RequestIdMiddleware(AdmissionMiddleware(hot, admission))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None:
            raise RuntimeError("install_front() was not called")
        await self.front(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Every error is ``{"error": "..."}``; nothing echoes the input or leaks a trace, path or internal name."""

    async def service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return codec.error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        where = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()[:3])
        return codec.json_response({"error": f"invalid request parameters: {where}"}, 400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, "request refused")
        return codec.json_response({"error": message}, exc.status_code, dict(exc.headers or {}))

    async def unexpected(request: Request, exc: Exception) -> Response:
        return codec.unexpected_error_response(exc)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


async def _refresh_gauges(state: AppState, period_s: float = 1.0) -> None:
    """With several workers a scrape reaches one of them: each keeps its own gauges fresh in the shared folder."""
    while True:
        health.refresh_gauges(state)
        await asyncio.sleep(period_s)


def create_app(settings: Settings | None = None) -> ServiceApp:
    """The app; models load in the lifespan (never at import) and drain on shutdown."""
    settings = settings or Settings()
    state = build_state(settings)

    grpc = GrpcServer(state) if settings.grpc_port else None

    def stopping() -> None:
        state.repository.stopping = True
        if grpc is not None:
            grpc.begin_stop()  # refuse new RPCs now; those in flight finish
        log.info("stop signal: not ready; finishing the requests in flight")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.repository.start()
        if grpc is not None:
            try:
                await grpc.start()
            except BaseException:  # e.g. the gRPC port is taken: do not leave the models' threads behind
                await state.repository.stop()
                raise
        install_stop_hook(stopping)
        log.info("serving models %s from %s", state.repository.names(), settings.model_repository.name)
        refresher = (
            asyncio.get_running_loop().create_task(_refresh_gauges(state)) if state.metrics.multiprocess else None
        )
        yield
        if refresher is not None:
            refresher.cancel()
        if grpc is not None:
            await grpc.stop()  # its requests in flight finish before the batchers drain
        await state.repository.stop()

    docs = settings.docs_enabled
    app = ServiceApp(
        title="attention-serve",
        version=__version__,
        description="Predictions and the attention behind them, over TF Serving-style REST and Open Inference v2.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.core = state
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(native.router)
    app.include_router(v2.router)
    app.include_router(model_config.router)
    if settings.admin_token is not None:  # control endpoints exist only with a token configured
        app.include_router(repository_api.router)
    if settings.ui_enabled:
        install_ui(app)
    app.install_front(state.admission, [native.router, v2.router])
    return app
