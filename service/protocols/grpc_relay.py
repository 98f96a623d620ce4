"""The wire between a worker and its gRPC front process: length-prefixed frames over a socket pair.

A frame is a header (payload length, kind, call id; little-endian) and its payload. The front sends ``CALL`` (a
method, the call's deadline, its credentials, the request's bytes as they came) and ``CANCEL``; the worker answers
each call with one ``REPLY`` (a status code, details, the retry push-back, the response's bytes). Besides calls, the
worker sends ``HEALTH`` (the statuses for health ``Watch`` streams) and ``STOP`` (drain now, within the grace
time); the front sends ``READY`` (the port it listens on, or why it could not) and ``STOPPED``.

Only the standard library and grpc's status codes: the front process imports this without the service's models.
"""

from __future__ import annotations

import asyncio
import enum
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc

HEADER = struct.Struct("<IBQ")  # payload length, kind, call id
CALL_HEAD = struct.Struct("<dHH")  # timeout in seconds (< 0: none), method length, credentials length
REPLY_HEAD = struct.Struct("<BHH")  # status code, details length, push-back length
MAX_FRAME = 1 << 31
CODES = {code.value[0]: code for code in grpc.StatusCode}


class Kind(enum.IntEnum):
    CALL = 1
    CANCEL = 2
    REPLY = 3
    HEALTH = 4
    STOP = 5
    READY = 6
    STOPPED = 7


@dataclass(frozen=True)
class Call:
    method: str  # "/package.Service/Method"
    timeout_s: float | None
    credentials: dict[str, str]  # authorization / x-api-key metadata, when the client sent them
    message: bytes


@dataclass(frozen=True)
class Reply:
    code: grpc.StatusCode
    details: str = ""
    pushback: str = ""  # grpc-retry-pushback-ms, when the refusal says when to retry
    message: bytes = b""


def encode_call(call: Call) -> bytes:
    method = call.method.encode()
    credentials = json.dumps(call.credentials).encode() if call.credentials else b""
    timeout = -1.0 if call.timeout_s is None else call.timeout_s
    return CALL_HEAD.pack(timeout, len(method), len(credentials)) + method + credentials + call.message


def decode_call(payload: bytes) -> Call:
    timeout, method_length, credentials_length = CALL_HEAD.unpack_from(payload)
    start = CALL_HEAD.size
    method = payload[start : start + method_length].decode()
    start += method_length
    credentials = json.loads(payload[start : start + credentials_length]) if credentials_length else {}
    message = payload[start + credentials_length :]
    return Call(method, None if timeout < 0 else timeout, credentials, message)


def encode_reply(reply: Reply) -> bytes:
    details, pushback = reply.details.encode()[:60000], reply.pushback.encode()
    return REPLY_HEAD.pack(reply.code.value[0], len(details), len(pushback)) + details + pushback + reply.message


def decode_reply(payload: bytes) -> Reply:
    code, details_length, pushback_length = REPLY_HEAD.unpack_from(payload)
    start = REPLY_HEAD.size
    details = payload[start : start + details_length].decode(errors="replace")
    start += details_length
    pushback = payload[start : start + pushback_length].decode()
    return Reply(CODES.get(code, grpc.StatusCode.UNKNOWN), details, pushback, payload[start + pushback_length :])


def encode_json(value: Any) -> bytes:
    return json.dumps(value).encode()


Receiver = Callable[[Kind, int, bytes], None]


class Relay(asyncio.Protocol):
    """Frames in and out over one stream; each frame that arrives goes to ``receive(kind, call id, payload)``.

    Frames sent during one pass of the event loop leave together at its end: one write (one system call) for the
    answers of a whole batch, not one each.
    """

    def __init__(self, receive: Receiver) -> None:
        self.receive = receive
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def send(self, kind: Kind, call_id: int = 0, payload: bytes = b"") -> None:
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing += (HEADER.pack(len(payload), kind, call_id), payload)

    def _flush(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= HEADER.size:
            length, kind, call_id = HEADER.unpack_from(buffer, offset)
            end = offset + HEADER.size + length
            if end > len(buffer):
                break
            self.receive(Kind(kind), call_id, bytes(buffer[offset + HEADER.size : end]))
            offset = end
        del buffer[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        """Close once what was sent has left."""
        if self._outgoing:
            self._flush()
        if self._transport is not None:
            self._transport.close()
