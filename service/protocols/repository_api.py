"""The v2 model repository extension: index, load and unload — only when an admin token is configured.

They act on models already under the repository root, by name; nothing here takes a path, a URL or a
model file from the request (Triton's "file:" overrides are refused).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from fastapi import APIRouter, Request, Response

from service.errors import InvalidInput
from service.model_folder import valid_name
from service.protocols import codec, schemas
from service.protocols.deps import AdminAuth, AppStateDep
from service.repository import ModelRepository

router = APIRouter(tags=["model repository (admin)"], dependencies=[AdminAuth])


async def _optional_json(request: Request, limit: int) -> dict[str, Any]:
    """Triton's client sends these bodies without a Content-Type; accept that, or JSON, and nothing else."""
    if codec.media_type(request) not in ("", "application/json"):
        return codec.expect_object(await codec.read_json(request, limit), "body")
    codec.check_encoding(request)
    body = await codec.read_body(request, limit)
    return codec.expect_object(codec.parse_json(body), "body") if body.strip() else {}


def check_name(name: str) -> None:
    if not valid_name(name):
        raise InvalidInput("model names are letters, digits, '_', '-' and '.', at most 64, not starting with '.'")


def refuse_overrides(parameters: Iterable[str], other_fields: Collection[str] = ()) -> None:
    """Load takes a name only: Triton's ``config`` and ``file:`` parameters (or any other field) are refused."""
    if any(key == "config" or key.startswith("file:") for key in parameters) or other_fields:
        raise InvalidInput("load takes only a model name: configuration and model files cannot be sent")


async def index_entries(repository: ModelRepository, only_ready: bool) -> list[dict[str, str]]:
    """Every model version in the repository (scanned now) with its state and the reason, as Triton lists them."""
    await repository.poll()
    entries = []
    for name in repository.names():
        for status in repository.statuses(name):
            ready = repository.model_ready(name, status.version)
            if only_ready and not ready:
                continue
            entries.append({
                "name": name, "version": str(status.version),
                "state": "READY" if ready else "LOADING" if status.state.value == "LOADING" else "UNAVAILABLE",
                "reason": status.error,
            })  # fmt: skip
    return entries


@router.post("/v2/repository/index", **schemas.REPOSITORY)
async def index(request: Request, state: AppStateDep) -> Response:
    """Every model version in the repository with its state (READY, LOADING, UNAVAILABLE) and the reason."""
    body = await _optional_json(request, state.settings.max_body_bytes)
    only_ready = codec.decode_flag(body.get("ready", False), "ready")
    return codec.json_response(await index_entries(state.repository, only_ready))


@router.post("/v2/repository/models/{name}/load", **schemas.REPOSITORY)
async def load(name: str, request: Request, state: AppStateDep) -> Response:
    """Serve a model that is in the repository root (by name only)."""
    check_name(name)
    body = await _optional_json(request, state.settings.max_body_bytes)
    parameters = codec.expect_object(body.get("parameters") or {}, "parameters")
    refuse_overrides(parameters, set(body) - {"parameters"})
    await state.repository.load_model(name)
    return codec.json_response({})


@router.post("/v2/repository/models/{name}/unload", **schemas.REPOSITORY)
async def unload(name: str, request: Request, state: AppStateDep) -> Response:
    """Stop serving a model (its queued requests finish first) until it is loaded again."""
    check_name(name)
    await _optional_json(request, state.settings.max_body_bytes)
    await state.repository.unload_model(name)
    return codec.json_response({})
