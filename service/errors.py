"""Domain errors. Each carries its HTTP status; one handler in the app turns them into ``{"error": ...}``.

Messages say what was wrong and where, and never carry a path, a trace or an internal name.
"""

from __future__ import annotations

QUOTE_LIMIT = 40


def quote(value: str, limit: int = QUOTE_LIMIT) -> str:
    """Something the client sent, for an error message: quoted, and cut (saying so) past ``limit`` characters.

    An error must stay small whatever was sent (a 20,000-character model name in a URL, a huge header).
    """
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… (cut, {len(value)} characters)"


class ServiceError(Exception):
    """Base of every error a client may see; ``status`` is the HTTP status to answer with."""

    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidInput(ServiceError):
    """The request is well-formed HTTP but its content is wrong (bad JSON, types, lengths, ids)."""

    status = 400


class Unauthorized(ServiceError):
    status = 401

    def __init__(self, message: str = "missing or invalid credentials") -> None:
        super().__init__(message, {"WWW-Authenticate": "Bearer"})


class NotFound(ServiceError):
    """Unknown model, version, label or output."""

    status = 404


class PayloadTooLarge(ServiceError):
    status = 413


class UnsupportedMediaType(ServiceError):
    status = 415


class ClientClosed(ServiceError):
    """The client went away before its request was read; nobody will see the answer (nginx's 499)."""

    status = 499


class Overloaded(ServiceError):
    """The queue is full: the client should retry after a moment."""

    status = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, {"Retry-After": str(retry_after_s)})


class Unavailable(ServiceError):
    """The model version exists but cannot take requests now (loading, unloading, shutting down)."""

    status = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, {"Retry-After": str(retry_after_s)})


class LoadFailed(ServiceError):
    """The repository could not load the model: waiting will not help until its files change (Triton: 400 too)."""

    status = 400


class DeadlineExceeded(ServiceError):
    """The request's deadline passed while it waited in the queue; it was not run."""

    status = 504


class InferenceFailed(ServiceError):
    """The runtime failed on a batch; the message is generic on purpose (details go to the log)."""

    status = 500
