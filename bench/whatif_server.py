"""What-if launcher: the service exactly as ``python -m service`` starts it, plus experimental changes applied
from outside (nothing in service/ changes). Each flag estimates the gain of a change the owner could make.

    python bench/whatif_server.py [--async-dependencies] [--no-spinning] -- --port 8002 --model-repository models

--async-dependencies  ``get_state`` and ``require_api_key`` become ``async def`` twins (same checks): FastAPI runs
                      sync dependencies in its thread pool, two thread hand-offs per request. The twins are put
                      into ``service.protocols.deps`` before the protocol modules import them. (Not through
                      ``app.dependency_overrides``: with an override set, FastAPI re-analyses the overridden
                      signatures on every request, which costs more than it saves.)
--no-spinning         ONNX Runtime session option ``session.intra_op.allow_spinning=0``: the intra-op pool
                      threads sleep instead of spinning after each run (they compete with the event loop for cores).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Annotated

if __package__ in (None, ""):  # run as a script: import the bench package from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import onnxruntime as ort
from fastapi import Depends, Header, Request

from service.protocols import deps
from service.protocols.deps import AppState
from service.security import bearer_token, check_credential


async def async_get_state(request: Request) -> AppState:
    state: AppState = request.app.state.core
    return state


async def async_require_api_key(
    state: Annotated[AppState, Depends(async_get_state)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    check_credential(state.settings.api_key, bearer_token(authorization, x_api_key))


def use_async_dependencies() -> None:
    """Replace the sync dependencies in ``service.protocols.deps``; must run before the routes are defined."""
    if "service.protocols.native" in sys.modules:
        raise RuntimeError("use_async_dependencies() must run before service.app or its protocols are imported")
    deps.get_state = async_get_state
    deps.require_api_key = async_require_api_key
    deps.AppStateDep = Annotated[AppState, Depends(async_get_state)]
    deps.InferenceAuth = Depends(async_require_api_key)


def disable_spinning() -> None:
    """Make every ``ort.SessionOptions()`` created from now on ask the intra-op pool not to spin."""
    original = ort.SessionOptions

    def session_options() -> ort.SessionOptions:
        options = original()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    ort.SessionOptions = session_options


def apply(async_dependencies: bool, no_spinning: bool) -> None:
    if async_dependencies:
        use_async_dependencies()
    if no_spinning:
        disable_spinning()


def main() -> None:
    parser = argparse.ArgumentParser(description="Start the service with experimental changes applied.")
    parser.add_argument("--async-dependencies", action="store_true")
    parser.add_argument("--no-spinning", action="store_true")
    args, service_argv = parser.parse_known_args()
    service_argv = [a for a in service_argv if a != "--"]
    apply(args.async_dependencies, args.no_spinning)
    import service.__main__ as entry  # only now: the routes pick up the patched dependencies

    entry.main(service_argv)


if __name__ == "__main__":
    main()
