"""One request three ways, for the protocol benchmarks: a batch of texts or of token ids as the native REST API's
JSON, the Open Inference Protocol's v2 REST JSON, and a gRPC ``ModelInferRequest`` (binary tensors in
``raw_input_contents``). Each asks for the API's default outputs, or with ``attention`` (the service's extension,
e.g. "all") for those attention outputs too: the self-attention maps make the answers large.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
from tritonclient.grpc import service_pb2 as pb

from bench.corpus import Sample

MODEL = "sentiment"
Items = list[str] | np.ndarray  # texts, or token ids [batch, length]


@dataclass(frozen=True)
class Bodies:
    native: bytes  # POST /v1/models/{model}:predict
    v2: bytes  # POST /v2/models/{model}/infer
    grpc: bytes  # a serialized ModelInferRequest (not yet framed for the wire)


def id_rows(samples: list[Sample], count: int, length: int) -> np.ndarray:
    """``count`` rows of exactly ``length`` real token ids: the corpus's ids run together and cut into rows."""
    stream = np.concatenate([s.ids for s in samples]).astype(np.int64)
    if len(stream) < count * length:
        raise ValueError(f"the samples hold {len(stream)} token ids; {count} rows of {length} need more")
    return stream[: count * length].reshape(count, length)


def length_prefixed(texts: list[str]) -> bytes:
    """BYTES elements in the binary tensor format: each a 4-byte little-endian length, then its UTF-8."""
    return b"".join(len(t.encode()).to_bytes(4, "little") + t.encode() for t in texts)


def grpc_message(items: Items, attention: str | None = None) -> bytes:
    request = pb.ModelInferRequest(model_name=MODEL)
    if attention:
        request.parameters["attention"].string_param = attention
    if isinstance(items, np.ndarray):
        request.inputs.add(name="input_ids", datatype="INT64", shape=list(items.shape))
        request.raw_input_contents.append(items.astype("<i8").tobytes())
    else:
        request.inputs.add(name="text", datatype="BYTES", shape=[len(items)])
        request.raw_input_contents.append(length_prefixed(items))
    return bytes(request.SerializeToString())


def v2_json(items: Items, attention: str | None = None) -> bytes:
    if isinstance(items, np.ndarray):
        tensor = {"name": "input_ids", "datatype": "INT64", "shape": list(items.shape), "data": items.ravel().tolist()}
    else:
        tensor = {"name": "text", "datatype": "BYTES", "shape": [len(items)], "data": items}
    return orjson.dumps({"inputs": [tensor], **({"parameters": {"attention": attention}} if attention else {})})


def native_json(items: Items, attention: str | None = None) -> bytes:
    body = {"instances": items.tolist() if isinstance(items, np.ndarray) else items}
    return orjson.dumps({**body, **({"parameters": {"attention": attention}} if attention else {})})


def bodies(items: Items, attention: str | None = None) -> Bodies:
    return Bodies(native_json(items, attention), v2_json(items, attention), grpc_message(items, attention))
