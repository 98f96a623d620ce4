"""The inference routes, answered without the framework's router: the per-request hot path.

Starlette tries a request against every route in turn, and FastAPI wraps each call in several layers (native
telemetry, which reads the environment per request, a body-limit, exception and exit-stack middleware, the
request/response adapters). At one sequence per request that cost more event-loop time than all of our own
decoding, batching and encoding (bench/README.md). The endpoints marked ``@hot`` stay declared on their routers
(the OpenAPI schema, the docs, one piece of code), but ``HotRoutes`` matches them first, with the routes' own
compiled patterns, and calls them directly; every other request goes on to the app unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError
from service.protocols import codec

HOT_MARK = "__attention_serve_hot__"
Endpoint = Callable[..., Awaitable[Response]]
E = TypeVar("E", bound=Endpoint)


def hot(endpoint: E) -> E:
    """Mark a POST endpoint whose parameters are its path's (strings) and ``request`` for the hot path."""
    setattr(endpoint, HOT_MARK, True)
    return endpoint


def route_path(scope: Scope) -> str:
    """The path the routes see: without the root path an ASGI server mounted the app under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    endpoint: Endpoint


class HotRoutes:
    """ASGI: POSTs to a hot route are served here, with the app's error bodies; the rest pass to ``app``."""

    def __init__(self, app: ASGIApp, owner: ASGIApp, routes: Iterable[BaseRoute]) -> None:
        self.app, self.owner = app, owner  # owner: what ``request.app`` returns to an endpoint
        self.routes = tuple(
            _Route(route.path_regex, route.endpoint)
            for route in routes
            if isinstance(route, APIRoute) and getattr(route.endpoint, HOT_MARK, False)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = route_path(scope)
            for route in self.routes:
                match = route.pattern.match(path)
                if match is not None:
                    scope["app"] = self.owner
                    response = await self._answer(route.endpoint, Request(scope, receive), match.groupdict())
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer(endpoint: Endpoint, request: Request, params: dict[str, str]) -> Response:
        try:
            return await endpoint(request=request, **params)
        except ServiceError as exc:
            return codec.error_response(exc)
        except Exception as exc:
            return codec.unexpected_error_response(exc)
