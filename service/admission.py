"""Admission control: at most ``limit`` requests in progress; past it, an immediate 503 with Retry-After.

Health, readiness and metrics are exempt, so probes and scrapes still answer under overload.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

EXEMPT_PREFIXES = ("/v2/health/", "/metrics")
BUSY_BODY = b'{"error":"the server is at its limit of requests in progress; retry shortly"}'


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            headers = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": BUSY_BODY})
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
