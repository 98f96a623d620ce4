"""Triton's model configuration extension: ``GET /v2/models/{name}[/versions/{v}]/config`` and gRPC ``ModelConfig``.

One document per served version, built once from the data plane's ``describe()`` and the batching policy: name,
platform, ``max_batch_size`` (the most sequences one request may carry; the batch dimension is left out of
``dims`` as Triton does), inputs (all optional: text, or token ids with an optional mask), outputs with their
dims, ``dynamic_batching`` and the version policy. The gRPC message is parsed from the same dictionary, so
tritonclient's ``get_model_config`` reads the same facts over HTTP and gRPC.
"""

from __future__ import annotations

import weakref
from typing import Any

from fastapi import APIRouter, Response
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from service.dataplane import Tensor, describe
from service.protocols import codec, schemas
from service.protocols.deps import AppState, AppStateDep
from service.repository import ServedVersion

router = APIRouter(tags=["Open Inference Protocol v2"])
DATA_TYPES = {"string": "TYPE_STRING", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "float32": "TYPE_FP32"}
PLATFORM = "onnxruntime_onnx"
_documents: weakref.WeakKeyDictionary[ServedVersion, tuple[dict[str, Any], model_config_pb2.ModelConfig]] = (
    weakref.WeakKeyDictionary()
)


def _tensor(tensor: Tensor, is_input: bool) -> dict[str, Any]:
    """Dims without the batch dimension; a tensor that is only [batch] is [1] reshaped to [] (Triton's way)."""
    entry: dict[str, Any] = {"name": tensor.name, "data_type": DATA_TYPES[tensor.dtype], "dims": list(tensor.shape[1:])}
    if not entry["dims"]:
        entry.update(dims=[1], reshape={"shape": []})
    if is_input:
        entry.update(optional=True, allow_ragged_batch=True)  # text or ids; sequences of any length, padded here
    return entry


def _version_policy(state: AppState) -> dict[str, Any]:
    config = state.repository.config
    if config.version_policy == "all":
        return {"all": {}}
    if config.version_policy == "specific":
        return {"specific": {"versions": list(config.specific_versions)}}
    return {"latest": {"num_versions": config.latest_versions}}


def build(served: ServedVersion, state: AppState) -> dict[str, Any]:
    """The configuration document of one served version (JSON-ready, Triton's field names)."""
    description, policy, limits = describe(served), served.batcher.policy, state.dataplane.limits
    kind = "KIND_CPU" if served.folder.model.device == "cpu" else "KIND_GPU"
    return {
        "name": description.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": _version_policy(state),
        "max_batch_size": limits.max_instances,
        "input": [_tensor(t, True) for t in description.inputs],
        "output": [_tensor(t, False) for t in description.outputs],
        "dynamic_batching": {
            "preferred_batch_size": [policy.max_batch_size],
            "max_queue_delay_microseconds": round(policy.max_queue_delay_s * 1e6),
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": round(limits.default_timeout_s * 1e6),
                "allow_timeout_override": True,
                "max_queue_size": policy.max_queue_size,
            },
        },
        "instance_group": [{"kind": kind, "count": policy.batches_in_flight}],
    }


def configuration(served: ServedVersion, state: AppState) -> tuple[dict[str, Any], model_config_pb2.ModelConfig]:
    """The document and its protobuf message, built on first use and kept as long as the version is served."""
    cached = _documents.get(served)
    if cached is None:
        document = build(served, state)
        cached = (document, json_format.ParseDict(document, model_config_pb2.ModelConfig()))
        _documents[served] = cached
    return cached


@router.get("/v2/models/{name}/config", **schemas.V2_METADATA)
async def model_configuration(name: str, state: AppStateDep) -> Response:
    """Triton's model configuration of the newest serving version."""
    return codec.json_response(configuration(state.repository.get(name), state)[0])


@router.get("/v2/models/{name}/versions/{version}/config", **schemas.V2_METADATA)
async def model_version_configuration(name: str, version: str, state: AppStateDep) -> Response:
    return codec.json_response(configuration(state.repository.get(name, codec.parse_version(version)), state)[0])
