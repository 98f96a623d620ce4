"""A worker's gRPC front: a process of its own that speaks gRPC and relays every call to its worker.

Why a process: in the worker, ``grpc.aio``'s machinery and the app's event loop are two busy Python threads under
one GIL, handing it to each other several times per call; its per-call cost tripled under load (bench/README.md).
Here it has a GIL of its own, and the worker reads calls off a socket as it reads HTTP requests: the data plane,
the batcher (shared with REST), the admission count, credentials and request parsing all stay in the worker. The
front holds no model: about 40 MB.

What the front does itself: HTTP/2 and gRPC, the message size limit, server reflection, health ``Watch`` streams
(from the statuses its worker pushes; ``Check`` is relayed), and the drain on its worker's ``STOP``. It runs in a
session of its own (a terminal's Ctrl-C reaches the worker, which then stops the front) and ends with its worker.

    python -m service.protocols.grpc_front --fd FD --address HOST:PORT --max-message-bytes N [--reuseport]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from tritonclient.grpc import service_pb2 as pb

from service.lifecycle import stop_with_parent
from service.logs import configure_logging
from service.protocols.grpc_handlers import MethodTable
from service.protocols.grpc_relay import Call, Kind, Relay, Reply, decode_reply, encode_call, encode_json
from service.protocols.grpc_setup import HEALTH_SERVICE, new_server, stop_grace

log = logging.getLogger("service.protocols.grpc_server")
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
CREDENTIALS = ("authorization", "x-api-key")
Context = grpc.aio.ServicerContext[Any, Any]


def passthrough(data: bytes) -> bytes:
    return data


class Calls:
    """The front's end of the relay: each gRPC call becomes a CALL frame and waits for its REPLY."""

    def __init__(self) -> None:
        self.relay: Relay | None = None
        self.pending: dict[int, asyncio.Future[Reply]] = {}
        self._ids = itertools.count(1)

    async def call(self, method: str, message: bytes, context: Context) -> bytes:
        assert self.relay is not None
        metadata = context.invocation_metadata() or ()
        credentials = {k: v for k, v in metadata if k in CREDENTIALS and isinstance(v, str)}
        call_id = next(self._ids)
        answered: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = answered
        self.relay.send(Kind.CALL, call_id, encode_call(Call(method, context.time_remaining(), credentials, message)))
        try:
            reply = await answered
        except asyncio.CancelledError:  # the client went away or its deadline passed: the worker drops the call
            self.pending.pop(call_id, None)
            self.relay.send(Kind.CANCEL, call_id)
            raise
        if reply.code is not grpc.StatusCode.OK:
            pushback = (("grpc-retry-pushback-ms", reply.pushback),) if reply.pushback else ()
            await context.abort(reply.code, reply.details, pushback)
        return reply.message

    def answer(self, call_id: int, payload: bytes) -> None:
        answered = self.pending.pop(call_id, None)
        if answered is not None and not answered.done():
            answered.set_result(decode_reply(payload))

    def fail_all(self) -> None:
        """The worker is gone: every call waiting for it is UNAVAILABLE."""
        for answered in self.pending.values():
            if not answered.done():
                answered.set_result(Reply(grpc.StatusCode.UNAVAILABLE, "the server is stopping; retry"))
        self.pending.clear()


class FrontHealth(health_aio.HealthServicer):  # type: ignore[misc]
    """``Watch`` from the statuses the worker pushes; ``Check`` asks the worker (it reads the repository live)."""

    def __init__(self, calls: Calls) -> None:
        super().__init__()
        self.calls = calls

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Context) -> health_pb2.HealthCheckResponse:
        path = f"/{HEALTH_SERVICE}/Check"
        return health_pb2.HealthCheckResponse.FromString(
            await self.calls.call(path, request.SerializeToString(), context)
        )


def inference_methods(calls: Calls) -> dict[str, grpc.RpcMethodHandler[bytes, bytes]]:
    """Every unary RPC of the inference service, relayed as bytes; streaming ones are not offered."""
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}
    for method in SERVICE.methods:
        path = f"/{SERVICE.full_name}/{method.name}"
        if method.client_streaming or method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(not_offered, passthrough, passthrough)
            continue

        async def relayed(message: bytes, context: Context, path: str = path) -> bytes:
            return await calls.call(path, message, context)

        handlers[method.name] = grpc.unary_unary_rpc_method_handler(relayed, passthrough, passthrough)
    return handlers


async def not_offered(requests: Any, context: Context) -> None:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server does not offer that RPC of the protocol")


class Front:
    """The gRPC server of the front process and its relay to the worker."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.calls = Calls()
        self.health = FrontHealth(self.calls)
        self.stop_grace: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def receive(self, kind: Kind, call_id: int, payload: bytes) -> None:
        if kind is Kind.REPLY:
            self.calls.answer(call_id, payload)
        elif kind is Kind.HEALTH:
            statuses: dict[str, int] = json.loads(payload)
            for service, status in statuses.items():
                asyncio.get_running_loop().create_task(self.health.set(service, status))
        elif kind is Kind.STOP and not self.stop_grace.done():
            self.stop_grace.set_result(float(json.loads(payload)["grace_s"]))

    def server(self) -> grpc.aio.Server:
        methods = MethodTable()  # health and reflection requests that do not parse: INVALID_ARGUMENT
        health_pb2_grpc.add_HealthServicer_to_server(self.health, methods)
        server = new_server(methods, SERVICE.full_name, self.args.max_message_bytes, self.args.reuseport)
        handler = grpc.method_handlers_generic_handler(SERVICE.full_name, inference_methods(self.calls))
        server.add_generic_rpc_handlers((handler,))
        return server

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        worker = socket.socket(fileno=self.args.fd)
        _, relay = await loop.create_unix_connection(lambda: Relay(self.receive), sock=worker)
        self.calls.relay = relay
        relay.closed.add_done_callback(lambda _: self.calls.fail_all())  # the worker is gone: nobody will answer
        server = self.server()
        try:
            port = server.add_insecure_port(self.args.address)
        except RuntimeError as error:
            relay.send(Kind.READY, 0, encode_json({"error": str(error)}))
            await asyncio.wait((relay.closed,), timeout=10)  # the worker reads it and closes the relay
            return
        await server.start()
        relay.send(Kind.READY, 0, encode_json({"port": port}))
        log.info("gRPC listening on %s (pid %d)", self.args.address.rsplit(":", 1)[0] + f":{port}", os.getpid())
        await asyncio.wait((self.stop_grace, relay.closed), return_when=asyncio.FIRST_COMPLETED)
        await self.health.enter_graceful_shutdown()
        if not self.stop_grace.done():  # the worker is gone: nothing in flight can be answered any more
            await server.stop(None)
            return
        grace = self.stop_grace.result()
        await server.stop(stop_grace(grace))
        log.info("gRPC stopped")
        relay.send(Kind.STOPPED)
        relay.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service.protocols.grpc_front")
    parser.add_argument("--fd", type=int, required=True, help="the socket to the worker")
    parser.add_argument("--address", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--max-message-bytes", type=int, required=True)
    parser.add_argument("--reuseport", action="store_true", help="share the port with the other workers' fronts")
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    stop_with_parent(os.getppid())

    async def serve() -> None:
        await Front(args).run()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
