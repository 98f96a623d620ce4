"""Open Inference Protocol v2 over HTTP/REST (KServe, Triton), with Triton's binary tensor data extension.

``GET /v2``, ``GET /v2/models/{name}[/versions/{v}]``, ``.../ready`` and ``POST .../infer``. Health routes
live in ``health``; the model repository extension in ``repository_api``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service import __version__
from service.dataplane import describe
from service.errors import InvalidInput, NotFound, UnsupportedMediaType, quote
from service.protocols import codec, large, schemas, tensors, v2_codec
from service.protocols.deps import AppStateDep, app_state, authorize_inference
from service.protocols.hot import hot
from service.repository import ServedVersion
from service.settings import Settings

router = APIRouter(tags=["Open Inference Protocol v2"])
HEADER_LENGTH = "inference-header-content-length"
# Triton's own HTTP client sends no Content-Type at all; anything else must be JSON or binary tensors.
INFER_MEDIA_TYPES = ("", "application/json", "application/octet-stream")


async def read_infer_body(request: Request, limit: int) -> tuple[Any, bytes]:
    """The JSON header (the whole body, or its first Inference-Header-Content-Length bytes) and the rest."""
    media = codec.media_type(request)
    if media not in INFER_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type must be application/json or application/octet-stream (got {quote(media)})"
        )
    codec.check_encoding(request)
    body = await codec.read_body(request, limit)
    declared = request.headers.get(HEADER_LENGTH)
    if declared is None:
        if media == "application/octet-stream":
            raise InvalidInput("binary tensor data needs the Inference-Header-Content-Length header")
        return codec.parse_json(body), b""
    if not declared.isdigit() or not 0 < int(declared) <= len(body):
        raise InvalidInput("Inference-Header-Content-Length must be a size within the body")
    return codec.parse_json(body[: int(declared)]), body[int(declared) :]


def metadata(served: ServedVersion, versions: list[str]) -> dict[str, Any]:
    description = describe(served)

    def tensor(t: Any) -> dict[str, Any]:
        return {"name": t.name, "datatype": tensors.DATATYPES[t.dtype], "shape": list(t.shape)}

    return {
        "name": description.name,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": [tensor(t) for t in description.inputs],
        "outputs": [tensor(t) for t in description.outputs],
        "attention_serve": description.facts,
    }


def server_document(settings: Settings) -> dict[str, Any]:
    """Name, version and protocol extensions of the server (REST ``GET /v2`` and gRPC ``ServerMetadata``)."""
    extensions = ["binary_tensor_data", "classification", "model_configuration"]
    if settings.admin_token is not None:
        extensions.append("model_repository")
    return {"name": "attention-serve", "version": __version__, "extensions": extensions}


@router.get("/v2", response_model=None, responses={200: {"content": {"application/json": {}}}})
async def server_metadata(state: AppStateDep) -> Response:
    return codec.json_response(server_document(state.settings))


async def _infer(request: Request, name: str, version: int | None) -> Response:
    state = app_state(request)  # no FastAPI dependencies on the hot path (see native._predict)
    with state.telemetry.observe("v2", name) as outcome:
        authorize_inference(state, request)
        body, binary = await read_infer_body(request, state.settings.max_body_bytes)
        decoded = v2_codec.decode_infer(body, binary, name, version)
        result = await state.dataplane.infer(decoded.request)
        outcome.version = str(result.version)
        header, chunks = v2_codec.encode_infer(result, decoded)
        head = await large.encode(header, large.attention_values(result))
        if not chunks:
            return Response(head, 200, media_type="application/json")
        headers = {"Inference-Header-Content-Length": str(len(head))}
        return Response(head + chunks, 200, headers, media_type="application/octet-stream")


@router.post("/v2/models/{name}/infer", **schemas.V2_INFER)
@hot
async def infer(name: str, request: Request) -> Response:
    """Inference with the newest serving version."""
    return await _infer(request, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer", **schemas.V2_INFER)
@hot
async def infer_version(name: str, version: str, request: Request) -> Response:
    return await _infer(request, name, codec.parse_version(version))


@router.get("/v2/models/{name}", **schemas.V2_METADATA)
async def model_metadata(name: str, state: AppStateDep) -> Response:
    served = state.repository.get(name)
    return codec.json_response(metadata(served, [str(s.version) for s in state.repository.serving(name)]))


@router.get("/v2/models/{name}/versions/{version}", **schemas.V2_METADATA)
async def model_version_metadata(name: str, version: str, state: AppStateDep) -> Response:
    served = state.repository.get(name, codec.parse_version(version))
    return codec.json_response(metadata(served, [str(served.version)]))


def _readiness(state: AppStateDep, name: str, version: int | None) -> Response:
    if name not in state.repository.names():
        raise NotFound(f"unknown model {quote(name)}")
    ready = state.repository.model_ready(name, version)
    return codec.json_response({"name": name, "ready": ready}, 200 if ready else 400)


@router.get("/v2/models/{name}/ready", **schemas.V2_READY)
async def model_ready(name: str, state: AppStateDep) -> Response:
    """200 when a version of the model serves; 400 (the protocol's "false") otherwise."""
    return _readiness(state, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", **schemas.V2_READY)
async def model_version_ready(name: str, version: str, state: AppStateDep) -> Response:
    return _readiness(state, name, codec.parse_version(version))
