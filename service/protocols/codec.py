"""Shared pieces of the JSON protocols: reading a body safely, strict value decoders, encoding responses."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import orjson
from fastapi import Request, Response
from starlette.requests import ClientDisconnect

from service.budget import MapChoice
from service.errors import ClientClosed, InvalidInput, PayloadTooLarge, ServiceError, UnsupportedMediaType, quote
from service.occlusion import OcclusionAsk

log = logging.getLogger(__name__)
JSON_TYPES = ("application/json",)
ENCODE_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
INT64_MAX = 2**63 - 1


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Encode with orjson; numpy arrays are written by orjson directly, with no per-float Python objects."""
    return Response(orjson.dumps(content, option=ENCODE_OPTIONS), status, headers, media_type="application/json")


def error_response(exc: ServiceError) -> Response:
    """Every client-visible error is ``{"error": "..."}`` with the error's status and headers."""
    return json_response({"error": exc.message}, exc.status, exc.headers)


def unexpected_error_response(exc: BaseException) -> Response:
    """A bug, not the client's doing: logged once with its trace, answered with a plain 500 that leaks nothing."""
    log.error("unhandled error", exc_info=exc)
    return json_response({"error": "internal error"}, 500)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def check_encoding(request: Request) -> None:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(f"compressed request bodies ({quote(encoding)}) are not accepted; send plain JSON")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes (declared or streamed, chunked included)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {quote(declared)} bytes; the limit is {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientClosed("the client closed the connection before sending its whole request") from None
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    """Parse a JSON body strictly: no NaN or Infinity, no invalid UTF-8 or lone surrogates."""
    if media_type(request) not in JSON_TYPES:
        shown = quote(media_type(request)) if media_type(request) else "none"
        raise UnsupportedMediaType(f"Content-Type must be application/json (got {shown})")
    check_encoding(request)
    return parse_json(await read_body(request, limit))


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidInput("the request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc.msg} at byte {exc.pos}") from None


def expect_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {kind(value)}")
    return value


def unknown_fields(fields: Any, where: str, what: str = "unknown field(s)") -> str:
    """``where: unknown field(s) [...]``, each name quoted and cut, at most five."""
    return f"{where}: {what} [{', '.join(quote(str(f)) for f in sorted(fields)[:5])}]"


def shown(value: Any) -> str:
    """A value the client sent, for a message: a string quoted and cut, anything else by its type."""
    return quote(value) if isinstance(value, str) else kind(value)


def kind(value: Any) -> str:
    """A JSON-ish name for a value's type, for error messages."""
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def decode_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: expected a text string, got {kind(value)}")
    return value


def decode_ids(value: Any, where: str) -> np.ndarray:
    """A list of token ids, strictly integers (no booleans, floats or strings), within int64."""
    if not isinstance(value, list):
        raise InvalidInput(f"{where}: expected a list of token ids, got {kind(value)}")
    for index, item in enumerate(value):
        if type(item) is not int:
            raise InvalidInput(f"{where}[{index}]: token ids must be integers, got {kind(item)}")
        if not -INT64_MAX <= item <= INT64_MAX:
            raise InvalidInput(f"{where}[{index}]: token id {item} is outside the vocabulary")
    return np.array(value, dtype=np.int64)


def decode_flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: expected true or false, got {kind(value)}")
    return value


def decode_timeout_ms(value: Any, where: str) -> float:
    if type(value) not in (int, float) or not 0 < value <= 3_600_000:
        raise InvalidInput(f"{where}: expected a timeout in milliseconds between 1 and 3600000")
    return float(value) / 1000.0


def decode_indices(value: Any, where: str) -> tuple[int, ...]:
    """Layer or head indices: a list of integers, one integer, or a comma-separated string (``"0,-1"``)."""
    items: list[Any] = value if isinstance(value, list) else [value]
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    indices = []
    for item in items:
        number = int(item) if isinstance(item, str) and item.lstrip("-").isdigit() and len(item) <= 6 else item
        if type(number) is not int or not -(10**6) < number < 10**6:
            raise InvalidInput(f"{where}: expected integer indices (a list, or text like '0,-1'), got {shown(item)}")
        indices.append(number)
    return tuple(indices)


def decode_maps(parameters: dict[str, Any]) -> MapChoice:
    """The ``layers`` and ``heads`` parameters: which self-attention maps a request wants."""
    layers = decode_indices(parameters["layers"], "parameters.layers") if "layers" in parameters else None
    heads = decode_indices(parameters["heads"], "parameters.heads") if "heads" in parameters else None
    return MapChoice(layers, heads)


EXPLAIN_CHOICES = ("occlusion",)


def decode_explanation(parameters: dict[str, Any]) -> tuple[frozenset[str], OcclusionAsk]:
    """``explain`` (``"occlusion"``), ``occlusion_window`` and ``target``: the extra outputs and how to occlude."""
    explain = parameters.get("explain")
    if explain is not None and explain not in EXPLAIN_CHOICES:
        raise InvalidInput(f"parameters.explain: expected one of {list(EXPLAIN_CHOICES)}, got {shown(explain)}")
    window = parameters.get("occlusion_window", 1)
    if type(window) is not int or not 1 <= window <= 1024:
        raise InvalidInput("parameters.occlusion_window: expected a number of tokens from 1 to 1024")
    target = parameters.get("target")
    if target is not None and type(target) not in (str, int):
        raise InvalidInput(f"parameters.target: expected a label or its index, got {kind(target)}")
    return (frozenset({"occlusion"}) if explain else frozenset()), OcclusionAsk(window, target)


def parse_version(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**63:
        raise InvalidInput(f"version {quote(text)} is not a positive integer")
    return int(text)


DEFAULT = "default"  # among a request's outputs: the version's default (its per-token attention, if any)
ATTENTION_CHOICES = {
    "none": frozenset(),
    "pooling": frozenset({"attention"}),
    "attention": frozenset({"attention"}),
    "self_attention": frozenset({"self_attention"}),
    "rollout": frozenset({"rollout"}),
    "all": frozenset({"all"}),  # every attention output the version has
}


def decode_attention(value: Any, where: str) -> frozenset[str]:
    """``"pooling"`` (default), ``"none"``, ``"self_attention"``, ``"rollout"``, ``"all"``, or a list of them."""
    choices = value if isinstance(value, list) else [value]
    wanted: frozenset[str] = frozenset()
    for choice in choices:
        if not isinstance(choice, str) or choice not in ATTENTION_CHOICES:
            raise InvalidInput(f"{where}: expected one or a list of {sorted(ATTENTION_CHOICES)}, got {shown(choice)}")
        wanted |= ATTENTION_CHOICES[choice]
    return wanted


def apply_mask(ids: np.ndarray, mask: np.ndarray, where: str) -> np.ndarray:
    """Drop right padding marked by an attention mask; only ones followed by zeros is accepted."""
    length = int(mask.sum())
    if mask.shape != ids.shape or not (np.all(mask[:length] == 1) and np.all(mask[length:] == 0)):
        raise InvalidInput(f"{where}.attention_mask: must match input_ids and be ones then zeros (right padding)")
    return ids[:length]
