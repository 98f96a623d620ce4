"""In-process gRPC tests: an app with its lifespan running (TestClient's loop serves HTTP and gRPC), a channel to
it, and builders of Open Inference Protocol requests from tritonclient's generated messages."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from fastapi.testclient import TestClient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.app import create_app
from tests.conftest import settings_for
from tests.e2e.conftest import free_port


@dataclass
class GrpcApp:
    http: TestClient
    stub: pb_grpc.GRPCInferenceServiceStub
    channel: grpc.Channel
    address: str


@contextmanager
def grpc_app(root: Path, **settings: Any) -> Iterator[GrpcApp]:
    """The app on ``root`` with gRPC on a free port; HTTP through TestClient, gRPC over real TCP."""
    port = free_port()
    with TestClient(create_app(settings_for(root, grpc_port=port, **settings))) as http:
        address = f"127.0.0.1:{port}"
        with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)]) as channel:
            yield GrpcApp(http, pb_grpc.GRPCInferenceServiceStub(channel), channel, address)


def length_prefixed(texts: list[str] | list[bytes]) -> bytes:
    """BYTES elements in the binary tensor format: a 4-byte little-endian length, then the bytes."""
    parts = [t.encode() if isinstance(t, str) else t for t in texts]
    return b"".join(struct.pack("<I", len(p)) + p for p in parts)


def text_request(texts: list[str], raw: bool = True, model: str = "sentiment", **fields: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, **fields)
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    if raw:
        request.raw_input_contents.append(length_prefixed(texts))
    else:
        tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    return request


def ids_request(ids: np.ndarray, datatype: str = "INT64", raw: bool = True, **fields: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="sentiment", **fields)
    tensor = request.inputs.add(name="input_ids", datatype=datatype, shape=list(ids.shape))
    if raw:
        request.raw_input_contents.append(ids.astype("<i8" if datatype == "INT64" else "<i4").tobytes())
    elif datatype == "INT64":
        tensor.contents.int64_contents.extend(int(v) for v in ids.ravel())
    else:
        tensor.contents.int_contents.extend(int(v) for v in ids.ravel())
    return request


def set_parameter(parameters: Any, key: str, value: bool | int | str | float) -> None:
    """One ``InferParameter`` of a message's parameters map, typed from the Python value."""
    field = {bool: "bool_param", int: "int64_param", str: "string_param", float: "double_param"}[type(value)]
    setattr(parameters[key], field, value)


def outputs_of(response: pb.ModelInferResponse) -> dict[str, np.ndarray | list[str]]:
    """Every output by name, decoded from ``raw_output_contents``."""
    decoded: dict[str, np.ndarray | list[str]] = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        if tensor.datatype == "BYTES":
            values, offset = [], 0
            while offset < len(raw):
                (length,) = struct.unpack_from("<I", raw, offset)
                values.append(raw[offset + 4 : offset + 4 + length].decode())
                offset += 4 + length
            decoded[tensor.name] = values
        else:
            dtype = {"FP32": "<f4", "INT32": "<i4", "INT64": "<i8"}[tensor.datatype]
            decoded[tensor.name] = np.frombuffer(raw, dtype=dtype).reshape(list(tensor.shape))
    return decoded


def rpc_error(call: Any, request: Any, **kwargs: Any) -> grpc.RpcError:
    """The error a call answers with (fails the test if it succeeds)."""
    try:
        call(request, **kwargs)
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded")
