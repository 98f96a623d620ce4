"""The gRPC server of one worker, started and stopped in the app's lifespan, so one worker owns one set of models
whichever protocol a request takes. Where gRPC itself runs is the setting ``grpc_server``:

- ``native``: a front process of the worker's own, gRPC's C++ server (``native/grpc_front.cc``), speaks gRPC and
  relays each call here (``grpc_process``), where the same servicer answers it on the app's event loop;
- ``process``: the same front in Python (``grpc_front``);
- ``auto`` (default): ``native`` where it is built (``native/build.sh``), else ``process``;
- ``thread``: ``grpc.aio`` on an event loop of its own in a thread of the worker (``grpc_loop``);
- ``loop``: ``grpc.aio`` on the loop the HTTP server runs.

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
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.protocols.deps import AppState
from service.protocols.grpc_handlers import MethodTable
from service.protocols.grpc_loop import AppLoop, LoopThread
from service.protocols.grpc_process import PYTHON_FRONT, AttachedFront, FrontProcess, native_front
from service.protocols.grpc_setup import add_reflection, new_server, stop_grace
from service.protocols.grpc_shared import shared_front_of
from service.protocols.grpc_v2 import SERVICE_NAME, Context, InferenceServicer

log = logging.getLogger(__name__)
SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_SYNC_S = 1.0


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

    def statuses(self) -> dict[str, int]:
        """Every service a probe may ask for (the server, the inference service, each model) and its status."""
        found = {service: self.status(service) for service in ("", SERVICE_NAME, *self.state.repository.names())}
        return {service: status for service, status in found.items() if status is not None}

    async def sync(self) -> None:
        for service, status in self.statuses().items():
            await self.set(service, status)


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.health = Health(state)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._front: FrontProcess | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop gRPC runs on (the app's, with a front)
        self._thread: LoopThread | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._sync: asyncio.Task[None] | None = None
        self._front_program: tuple[str, ...] = ()

    def methods(self, app: AppLoop) -> MethodTable:
        """The inference and health services (checked: requests that do not parse are INVALID_ARGUMENT)."""
        methods = MethodTable()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.state, app), methods)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, methods)
        return methods

    async def start(self) -> None:
        """Bind (``RuntimeError`` if the port cannot be had) and start serving."""
        app = AppLoop(asyncio.get_running_loop())
        mode = self.state.settings.grpc_server
        if mode in ("auto", "native", "process"):
            self._front_program = self.front_program(mode)
            await self._start_front(app)
        elif mode == "loop":
            await self._start(app)
        else:
            self._thread = LoopThread("grpc")
            self._thread.start()
            try:
                await self._thread.run(self._start(app))
            except BaseException:
                await self._thread.stop()
                self._thread = None
                raise

    @staticmethod
    def front_program(mode: str) -> tuple[str, ...]:
        """The front's command for ``mode`` (``RuntimeError`` if ``native`` is asked for and not built)."""
        native = native_front() if mode != "process" else None
        if native is not None:
            return (native,)
        if mode == "native":
            raise RuntimeError("gRPC: the native front is not built (run native/build.sh) or set grpc_server=process")
        return PYTHON_FRONT

    async def _start_front(self, app: AppLoop) -> None:
        self._front = await self._new_front(app, self.state.settings.grpc_port)
        self.port, self._loop = self._front.port, asyncio.get_running_loop()
        self._sync = self._loop.create_task(self._tend_front(app))

    async def _new_front(self, app: AppLoop, port: int) -> FrontProcess:
        settings = self.state.settings
        methods = self.methods(app)
        add_reflection(methods, SERVICE_NAME)  # the native front relays reflection's messages
        shared = shared_front_of(os.environ) if self._front_program != PYTHON_FRONT else None
        front = (
            AttachedFront(methods, shared.port, shared.supervisor, shared.workers_socket)
            if shared is not None
            else FrontProcess(
                self._front_program,
                methods,
                address(settings.host, port),
                settings.max_body_bytes,
                reuseport=settings.workers > 1,
                log_level=settings.log_level,
            )
        )
        await front.start()
        front.push_health(self.health.statuses())
        return front

    async def _tend_front(self, app: AppLoop) -> None:
        """Push health every second; start a new front if this one ended on its own (gRPC must not go quiet)."""
        while True:
            assert self._front is not None
            front = self._front
            await asyncio.wait((front.ended,), timeout=HEALTH_SYNC_S)
            if not front.ended.done():
                front.push_health(self.health.statuses())
                continue
            if front.stopping:
                return
            await front.stop(0)  # reap it
            log.error("the gRPC front process ended (exit code %s); starting another", front.exit_code)
            try:
                self._front = await self._new_front(app, self.port)
            except RuntimeError as error:
                log.error("%s; retrying", error)
                await asyncio.sleep(HEALTH_SYNC_S)

    async def _start(self, app: AppLoop) -> None:
        settings = self.state.settings
        server = new_server(self.methods(app), SERVICE_NAME, settings.max_body_bytes, settings.workers > 1)
        self.port = server.add_insecure_port(address(settings.host, settings.grpc_port))
        await server.start()
        self._server, self._loop = server, asyncio.get_running_loop()
        await self.health.sync()
        self._sync = self._loop.create_task(self._sync_forever())
        log.info("gRPC listening on %s (pid %d)", address(settings.host, self.port), os.getpid())

    def begin_stop(self) -> None:
        """From the stop-signal handler (on the app loop's thread): start the drain without waiting for it."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._begin_stop)

    def _begin_stop(self) -> None:
        if self._front is not None:
            self._front.begin_stop(self.state.settings.graceful_shutdown_s)
        else:
            self._stop_task()

    async def stop(self) -> None:
        """Stop taking RPCs, let those in flight finish (bounded by the graceful shutdown time)."""
        if self._front is not None:
            if self._sync is not None:
                self._sync.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sync
            await self._front.stop(self.state.settings.graceful_shutdown_s)
        elif self._thread is not None:
            await self._thread.run(self._drained())
            await self._thread.stop()
        elif self._server is not None:
            await self._stop_task()

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
        await self._server.stop(stop_grace(grace))
        log.info("gRPC stopped")

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_SYNC_S)
            with contextlib.suppress(Exception):
                await self.health.sync()
