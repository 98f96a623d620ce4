"""The gRPC server of one worker: ``grpc.aio`` on an event loop of its own in its own thread (``grpc_own_loop``,
see ``grpc_loop``) or on the loop the HTTP server runs, started and stopped in the app's lifespan, so one worker
owns one set of models whichever protocol a request takes.

Besides the inference service it serves ``grpc.health.v1`` (service "" and ``inference.GRPCInferenceService``:
the server's readiness; a model's name: that model's) for Kubernetes ``grpc:`` probes, and server reflection
(for grpcurl). The message size limit is the HTTP body limit. With several workers each binds the same port with
``SO_REUSEPORT`` and the kernel spreads connections over them (a channel stays with one worker); a single worker
binds without it, so a port in use fails loudly instead of being shared with a stranger.

On a stop signal (``begin_stop``) health turns NOT_SERVING and the server stops taking RPCs; those in flight get
``graceful_shutdown_s`` to finish, and the lifespan waits for them before the batchers drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.protocols.deps import AppState
from service.protocols.grpc_handlers import CheckedMethods
from service.protocols.grpc_loop import AppLoop, LoopThread
from service.protocols.grpc_v2 import SERVICE_NAME, Context, InferenceServicer

log = logging.getLogger(__name__)
SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_SERVICE: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
HEALTH_SYNC_S = 1.0
NO_LIMIT_S = 365 * 24 * 3600.0  # uvicorn waits without limit when the graceful shutdown time is under a second


class Health(health_aio.HealthServicer):  # type: ignore[misc]
    """``Check`` reads the repository at each call; ``Watch`` streams follow a sync every second."""

    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state

    def status(self, service: str) -> int | None:
        repository = self.state.repository
        if service in ("", SERVICE_NAME):
            return SERVING if repository.ready else NOT_SERVING
        if service in repository.names():
            return SERVING if repository.model_ready(service) and not repository.stopping else NOT_SERVING
        return None

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Context) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service or model")
        return health_pb2.HealthCheckResponse(status=status)

    async def sync(self) -> None:
        for service in ("", SERVICE_NAME, *self.state.repository.names()):
            status = self.status(service)
            if status is not None:
                await self.set(service, status)


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.health = Health(state)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop gRPC runs on
        self._thread: LoopThread | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._sync: asyncio.Task[None] | None = None

    def options(self) -> list[tuple[str, int]]:
        settings = self.state.settings
        return [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]

    async def start(self) -> None:
        """Bind (``RuntimeError`` if the port cannot be had) and start serving."""
        app = AppLoop(asyncio.get_running_loop())
        if not self.state.settings.grpc_own_loop:
            await self._start(app)
            return
        self._thread = LoopThread("grpc")
        self._thread.start()
        try:
            await self._thread.run(self._start(app))
        except BaseException:
            await self._thread.stop()
            self._thread = None
            raise

    async def _start(self, app: AppLoop) -> None:
        settings = self.state.settings
        server = grpc.aio.server(options=self.options())
        methods = CheckedMethods(server)  # requests that do not parse: INVALID_ARGUMENT, not gRPC's UNKNOWN
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.state, app), methods)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, methods)
        services = (SERVICE_NAME, HEALTH_SERVICE, reflection.SERVICE_NAME)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(services), methods)
        self.port = server.add_insecure_port(address(settings.host, settings.grpc_port))
        await server.start()
        self._server, self._loop = server, asyncio.get_running_loop()
        await self.health.sync()
        self._sync = self._loop.create_task(self._sync_forever())
        log.info("gRPC listening on %s (pid %d)", address(settings.host, self.port), os.getpid())

    def begin_stop(self) -> None:
        """From the stop-signal handler (on the loop's thread): start the drain without waiting for it."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop_task)

    async def stop(self) -> None:
        """Stop taking RPCs, let those in flight finish (bounded by the graceful shutdown time)."""
        if self._server is None:
            return
        if self._thread is None:
            await self._stop_task()
            return
        await self._thread.run(self._drained())
        await self._thread.stop()

    async def _drained(self) -> None:
        await self._stop_task()

    def _stop_task(self) -> asyncio.Task[None]:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._drain())
        return self._stopping

    async def _drain(self) -> None:
        assert self._server is not None
        if self._sync is not None:
            self._sync.cancel()
        await self.health.enter_graceful_shutdown()
        grace = self.state.settings.graceful_shutdown_s
        await self._server.stop(grace if grace >= 1 else NO_LIMIT_S)  # as uvicorn's timeout_graceful_shutdown
        log.info("gRPC stopped")

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_SYNC_S)
            with contextlib.suppress(Exception):
                await self.health.sync()
