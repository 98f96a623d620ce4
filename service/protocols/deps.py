"""What routes receive through FastAPI dependencies: the app state and the credential checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

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


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.core
    return state


AppStateDep = Annotated[AppState, Depends(get_state)]


def require_api_key(
    state: AppStateDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    check_credential(state.settings.api_key, bearer_token(authorization, x_api_key))


def require_admin(
    state: AppStateDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    if state.settings.admin_token is None:  # control endpoints do not exist without a token
        raise NotFound("not found")
    check_credential(state.settings.admin_token, bearer_token(authorization, x_api_key))


InferenceAuth = Depends(require_api_key)
AdminAuth = Depends(require_admin)
