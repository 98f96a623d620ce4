"""Per-request accounting: outcome counters, latency, and the optional structured request log."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from service.errors import ServiceError
from service.metrics import Metrics

log = logging.getLogger("service.requests")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


@dataclass
class Outcome:
    """Filled in by the route as the request proceeds."""

    version: str = ""


def classify(exc: BaseException | None) -> str:
    if exc is None:
        return "success"
    if isinstance(exc, asyncio.CancelledError):  # the client went away or its deadline passed (gRPC)
        return "cancelled"
    if isinstance(exc, ServiceError):
        return {499: "cancelled", 503: "rejected", 504: "timeout"}.get(
            exc.status, "client_error" if exc.status < 500 else "error"
        )
    return "error"


class Telemetry:
    def __init__(self, metrics: Metrics, log_requests: bool) -> None:
        self.metrics, self.log_requests = metrics, log_requests

    @contextmanager
    def observe(self, protocol: str, model: str) -> Iterator[Outcome]:
        """Count the request by outcome and time it; re-raise whatever the route raised."""
        outcome, started, error = Outcome(), time.perf_counter(), None
        in_progress = self.metrics.in_progress.labels(protocol)
        in_progress.inc()
        try:
            yield outcome
        except BaseException as exc:
            error = exc
            raise
        finally:
            in_progress.dec()
            elapsed = time.perf_counter() - started
            label = classify(error)
            self.metrics.requests.labels(model, outcome.version, protocol, label).inc()
            self.metrics.request_seconds.labels(model, protocol).observe(elapsed)
            if self.log_requests or label not in ("success", "client_error"):
                log.info(
                    "request",
                    extra={
                        "request_id": request_id.get(), "protocol": protocol, "model": model,
                        "version": outcome.version, "outcome": label, "ms": round(elapsed * 1000, 3),
                    },
                )  # fmt: skip
