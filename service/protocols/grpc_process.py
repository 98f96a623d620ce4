"""The worker's side of its gRPC front process: start it, answer its calls, push health, stop it.

The front is gRPC's C++ server (``native/grpc_front.cc``, built by ``native/build.sh``) or, where that is not
built, ``grpc.aio`` in Python (``grpc_front``); both speak the same relay (``grpc_relay``). Each call the front
relays is answered by the same handlers the in-process server runs (``MethodTable``: the request parsed, or
INVALID_ARGUMENT; the servicer; its response serialized), in a task of its own on the app's event loop, with a
``RelayContext`` in place of gRPC's servicer context. A CANCEL (the client went away, or its deadline passed)
cancels that task, as gRPC would. The native front relays each message of a server reflection stream as a call
of its own: one request, one response.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from service.protocols.grpc_handlers import MethodTable
from service.protocols.grpc_relay import Call, Kind, Relay, Reply, decode_call, encode_json, encode_reply

log = logging.getLogger(__name__)
READY_WITHIN_S = 60.0
STOPPED_MARGIN_S = 10.0
PUSHBACK = "grpc-retry-pushback-ms"
NATIVE_BUILT = Path(__file__).resolve().parents[2] / "native" / "build" / "grpc_front"
NATIVE_INSTALLED = "attention-serve-grpc-front"  # the images install it on the PATH under this name
PYTHON_FRONT = (sys.executable, "-m", "service.protocols.grpc_front")


def native_front() -> str | None:
    """The native front's program: built in this checkout, or installed on the PATH; None when neither."""
    if NATIVE_BUILT.is_file() and os.access(NATIVE_BUILT, os.X_OK):
        return str(NATIVE_BUILT)
    return shutil.which(NATIVE_INSTALLED)


class RelayContext:
    """What the servicer reads of gRPC's servicer context, for a relayed call: metadata, deadline, abort."""

    def __init__(self, call: Call) -> None:
        self._metadata = tuple(call.credentials.items())
        self._deadline = None if call.timeout_s is None else time.monotonic() + call.timeout_s
        self.status: Reply | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[tuple[str, str]] = ()
    ) -> None:
        pushback = dict(trailing_metadata).get(PUSHBACK, "")
        self.status = Reply(code, details, pushback)
        raise grpc.aio.AbortError()


class FrontProcess:
    """A front process serving gRPC for this worker, and the relay to it."""

    def __init__(
        self,
        program: Sequence[str],
        methods: MethodTable,
        address: str,
        max_message_bytes: int,
        reuseport: bool,
        log_level: str,
    ):
        self.methods = methods
        self.command = [
            *program, "--address", address, "--max-message-bytes", str(max_message_bytes), "--log-level", log_level,
            *(["--reuseport"] if reuseport else []),
        ]  # fmt: skip
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._relay: Relay | None = None
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._ready: asyncio.Future[dict[str, object]] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._stop_sent = False

    async def start(self) -> None:
        """Start the front and wait until it listens (``RuntimeError`` with its reason if it cannot)."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        with theirs:
            command = [*self.command, "--fd", str(theirs.fileno())]
            # A session of its own: a terminal's Ctrl-C reaches the worker, which then drains the front. (S603: the
            # command is this interpreter and this package's module, or this checkout's native front.)
            self._process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), start_new_session=True)  # noqa: S603
        self._ready, self._stopped = loop.create_future(), loop.create_future()
        _, self._relay = await loop.create_unix_connection(lambda: Relay(self._receive), sock=ours)
        waiting = (self._ready, self._relay.closed)
        await asyncio.wait(waiting, timeout=READY_WITHIN_S, return_when=asyncio.FIRST_COMPLETED)
        answer = self._ready.result() if self._ready.done() else {"error": "the gRPC front did not start in time"}
        if "port" not in answer:
            await self._end()
            raise RuntimeError(f"gRPC: {answer.get('error', 'the front process ended')}")
        self.port = int(str(answer["port"]))

    @property
    def ended(self) -> asyncio.Future[None]:
        """Done when the relay closed: the front stopped, or ended on its own."""
        assert self._relay is not None, "start() first"
        return self._relay.closed

    @property
    def stopping(self) -> bool:
        """Told to stop (so its end is expected)."""
        return self._stop_sent

    @property
    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def push_health(self, statuses: dict[str, int]) -> None:
        if self._relay is not None:
            self._relay.send(Kind.HEALTH, 0, encode_json(statuses))

    def begin_stop(self, grace_s: float) -> None:
        """On the app's loop: the front stops taking calls; those in flight get ``grace_s`` to finish."""
        if self._relay is not None and not self._stop_sent:
            self._stop_sent = True
            self._relay.send(Kind.STOP, 0, encode_json({"grace_s": grace_s}))

    async def stop(self, grace_s: float) -> None:
        """Drain the front (its calls in flight still reach the data plane), then end it."""
        if self._relay is None or self._stopped is None:
            return
        self.begin_stop(grace_s)
        limit = grace_s + STOPPED_MARGIN_S if grace_s >= 1 else None  # under a second: no limit, as uvicorn
        await asyncio.wait((self._stopped, self._relay.closed), timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        await self._end()

    async def _end(self) -> None:
        if self._relay is not None:
            self._relay.close()
        for task in self._calls.values():
            task.cancel()
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(process.wait, STOPPED_MARGIN_S)
            if process.poll() is None:
                process.kill()
                await asyncio.to_thread(process.wait)

    def _receive(self, kind: Kind, call_id: int, payload: bytes) -> None:
        if kind is Kind.CALL:
            self._calls[call_id] = asyncio.get_running_loop().create_task(self._answer(call_id, decode_call(payload)))
        elif kind is Kind.CANCEL:
            task = self._calls.pop(call_id, None)
            if task is not None:
                task.cancel()
        elif kind is Kind.READY and self._ready is not None and not self._ready.done():
            self._ready.set_result(json.loads(payload))
        elif kind is Kind.STOPPED and self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    async def _answer(self, call_id: int, call: Call) -> None:
        try:
            reply = await self._run(call)
        except asyncio.CancelledError:
            return  # the front no longer waits for this call
        finally:
            self._calls.pop(call_id, None)
        if self._relay is not None:
            self._relay.send(Kind.REPLY, call_id, encode_reply(reply))

    async def _run(self, call: Call) -> Reply:
        handler = self.methods.handler(call.method)
        # Unary calls, and a stream's message with its one response (reflection); the servicer takes the relay's
        # context in place of gRPC's.
        behaviour: Callable[..., Any] | None = None
        if handler is not None and handler.request_deserializer is not None:
            if not handler.request_streaming and not handler.response_streaming:
                behaviour = handler.unary_unary
            elif handler.request_streaming and handler.response_streaming:
                stream: Callable[..., AsyncIterator[Any]] = handler.stream_stream  # type: ignore[assignment]
                behaviour = functools.partial(answer_one, stream)
        if handler is None or handler.request_deserializer is None or behaviour is None:
            return Reply(grpc.StatusCode.UNIMPLEMENTED, "this server does not offer that RPC of the protocol")
        context = RelayContext(call)
        try:
            response = await behaviour(handler.request_deserializer(call.message), context)
        except grpc.aio.AbortError:
            return context.status or Reply(grpc.StatusCode.INTERNAL, "internal error")
        except Exception as error:  # the servicer answers its own errors; anything else is a bug
            log.error("unhandled error", exc_info=error)
            return Reply(grpc.StatusCode.INTERNAL, "internal error")
        serialize = handler.response_serializer
        return Reply(grpc.StatusCode.OK, message=serialize(response) if serialize else response)


class AttachedFront(FrontProcess):
    """This worker's relay to the server's shared front (``grpc_shared``), which the supervisor started: connect
    instead of starting a process. Its STOP takes this worker out of the front's rotation; STOPPED comes back once
    the calls it holds are answered."""

    def __init__(self, methods: MethodTable, port: int, supervisor: int, workers_socket: str) -> None:
        super().__init__((), methods, "", 0, reuseport=False, log_level="")
        self.workers_socket, self.supervisor = workers_socket, supervisor
        self._port = port

    async def start(self) -> None:
        """Connect (``RuntimeError`` if the front cannot be reached within ``READY_WITHIN_S``)."""
        loop = asyncio.get_running_loop()
        self._ready, self._stopped = loop.create_future(), loop.create_future()
        deadline = time.monotonic() + READY_WITHIN_S
        while True:
            try:
                _, self._relay = await loop.create_unix_connection(
                    lambda: Relay(self._receive), path=self.workers_socket
                )
                break
            except OSError as error:  # the supervisor is starting another front, unless it is gone itself
                if time.monotonic() > deadline or os.getppid() != self.supervisor:
                    message = f"gRPC: the shared front at {self.workers_socket} is unreachable: {error}"
                    raise RuntimeError(message) from error
                await asyncio.sleep(0.05)
        self.port = self._port

    async def stop(self, grace_s: float) -> None:
        await super().stop(grace_s)
        if self._stopped is not None and self._stopped.done():
            log.info("gRPC stopped (this worker's calls answered)")


async def answer_one(stream: Callable[..., AsyncIterator[Any]], request: Any, context: RelayContext) -> Any:
    """A streaming method's response to one request: the first message of its stream."""

    async def requests() -> AsyncIterator[Any]:
        yield request

    async for response in stream(requests(), context):
        return response
    raise RuntimeError("the stream answered nothing")
