"""Admission control: at most ``limit`` requests in progress; past it, an immediate refusal (503 + Retry-After over
HTTP, RESOURCE_EXHAUSTED over gRPC). One ``Admission`` counter per process is shared by every protocol.

Health, readiness and metrics are exempt, so probes and scrapes still answer under overload.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Overloaded

EXEMPT_PREFIXES = ("/v2/health/", "/metrics")
BUSY_MESSAGE = "the server is at its limit of requests in progress; retry shortly"
BUSY_BODY = b'{"error":"' + BUSY_MESSAGE.encode() + b'"}'


class Admission:
    """Requests in progress, over every protocol of this process (all on one event loop: no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.active = limit, 0

    def try_enter(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one place while the block runs; raise Overloaded at once when there is none."""
        if not self.try_enter():
            raise Overloaded(BUSY_MESSAGE)
        try:
            yield
        finally:
            self.leave()


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app, self.admission = app, admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        if not self.admission.try_enter():
            headers = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": BUSY_BODY})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave()
