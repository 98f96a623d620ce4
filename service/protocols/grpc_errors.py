"""Domain errors → gRPC status codes, in one place, from the HTTP status each error carries.

Whatever the request itself gets wrong is INVALID_ARGUMENT (or NOT_FOUND, UNAUTHENTICATED); only what waiting can
cure is RESOURCE_EXHAUSTED (queue full, too many requests in progress) or UNAVAILABLE (a version unloading, the
server stopping), and those carry ``grpc-retry-pushback-ms`` so a client with a retry policy waits as over HTTP's
Retry-After. A message over the size limit is refused by gRPC itself, with RESOURCE_EXHAUSTED as its spec says.
"""

from __future__ import annotations

import grpc

from service.errors import Overloaded, ServiceError

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,  # as gRPC's own message-size limit answers
    415: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
PUSHBACK = "grpc-retry-pushback-ms"


def status_code(error: ServiceError) -> grpc.StatusCode:
    """The code for a domain error: a full queue is RESOURCE_EXHAUSTED, other 503s UNAVAILABLE."""
    if isinstance(error, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    fallback = grpc.StatusCode.INVALID_ARGUMENT if 400 <= error.status < 500 else grpc.StatusCode.INTERNAL
    return STATUS_CODES.get(error.status, fallback)


def trailers(error: ServiceError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata: the retry delay of a refusal that says when to come back."""
    retry_after = error.headers.get("Retry-After", "")
    return ((PUSHBACK, str(int(retry_after) * 1000)),) if retry_after.isdigit() else ()
