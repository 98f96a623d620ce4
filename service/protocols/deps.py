"""What routes receive through FastAPI dependencies: the app state and the credential checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.admission import Admission
from service.dataplane import DataPlane
from service.errors import NotFound
from service.metrics import Metrics
from service.repository import ModelRepository
from service.security import bearer_token, check_credential
from service.settings import Settings
from service.telemetry import Telemetry


@dataclass(frozen=True)
class AppState:
    """Everything one app instance owns; created in ``create_app`` and kept on ``app.state.core``."""

    settings: Settings
    repository: ModelRepository
    dataplane: DataPlane
    metrics: Metrics
    telemetry: Telemetry
    admission: Admission  # requests in progress, HTTP and gRPC together


def app_state(request: Request) -> AppState:
    """The app's state, for hot routes that take it directly rather than through a dependency."""
    state: AppState = request.app.state.core
    return state


async def get_state(request: Request) -> AppState:
    # async: FastAPI runs plain-def dependencies in its thread pool, two thread hand-offs per request.
    return app_state(request)


AppStateDep = Annotated[AppState, Depends(get_state)]


def authorize_inference(state: AppState, request: Request) -> None:
    """The optional inference API key (``Authorization: Bearer`` or ``X-API-Key``), checked in constant time."""
    if state.settings.api_key is not None:
        headers = request.headers
        check_credential(state.settings.api_key, bearer_token(headers.get("authorization"), headers.get("x-api-key")))


async def require_admin(request: Request) -> None:
    state = app_state(request)
    if state.settings.admin_token is None:  # control endpoints do not exist without a token
        raise NotFound("not found")
    headers = request.headers
    check_credential(state.settings.admin_token, bearer_token(headers.get("authorization"), headers.get("x-api-key")))


AdminAuth = Depends(require_admin)
