"""The wire between a worker and its gRPC front: frames survive any split of the stream, calls and replies keep every
field, and the context a relayed call runs with gives the servicer what gRPC's would."""

from __future__ import annotations

import grpc
import pytest

from service.protocols.grpc_process import RelayContext
from service.protocols.grpc_relay import (
    HEADER,
    Call,
    Kind,
    Relay,
    Reply,
    decode_call,
    decode_reply,
    encode_call,
    encode_reply,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "call",
    [
        Call("/inference.GRPCInferenceService/ModelInfer", 2.5, {"authorization": "Bearer k"}, b"\x00\xff" * 9),
        Call("/grpc.health.v1.Health/Check", None, {}, b""),
    ],
    ids=["with deadline and credentials", "bare"],
)
def test_a_call_comes_out_as_it_went_in(call: Call) -> None:
    assert decode_call(encode_call(call)) == call


def test_a_reply_keeps_its_status_details_pushback_and_message() -> None:
    refused = Reply(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue is full — retry", "1000", b"")
    answered = Reply(grpc.StatusCode.OK, message=b"\x08\x01" * 100)
    assert decode_reply(encode_reply(refused)) == refused
    assert decode_reply(encode_reply(answered)) == answered


async def test_frames_arrive_whole_and_in_order_however_the_stream_is_cut() -> None:
    received: list[tuple[Kind, int, bytes]] = []
    relay = Relay(lambda kind, call_id, payload: received.append((kind, call_id, payload)))
    frames = [(Kind.CALL, 1, b"a" * 70_000), (Kind.CANCEL, 1, b""), (Kind.REPLY, 7, b"xyz"), (Kind.STOP, 0, b"{}")]
    stream = b"".join(HEADER.pack(len(p), k, c) + p for k, c, p in frames)
    for start in range(0, len(stream), 4093):  # pieces that cut headers and payloads anywhere
        relay.data_received(stream[start : start + 4093])
    assert received == frames


async def test_the_relayed_context_gives_metadata_deadline_and_abort() -> None:
    context = RelayContext(Call("/m", 10.0, {"x-api-key": "k"}, b""))
    assert context.invocation_metadata() == (("x-api-key", "k"),)
    remaining = context.time_remaining()
    assert remaining is not None
    assert 0 < remaining <= 10.0
    assert RelayContext(Call("/m", None, {}, b"")).time_remaining() is None
    with pytest.raises(grpc.aio.AbortError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, "unloading", (("grpc-retry-pushback-ms", "1000"),))
    assert context.status == Reply(grpc.StatusCode.UNAVAILABLE, "unloading", "1000")
