"""Structured (JSON) logs, one object per line, with the request id of the request being served."""

from __future__ import annotations

import logging
import sys
import time

import orjson

from service.telemetry import request_id

STANDARD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in STANDARD_FIELDS and k != "request_id"})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


ACCESS_LOGGER = "uvicorn.access"


def configure_logging(level: str) -> None:
    """JSON lines on stderr for everything, except uvicorn's access log, which stays off.

    Requests are logged by the service itself, one structured line each, only with ``LOG_REQUESTS``
    (``service.telemetry``). uvicorn decides per connection whether to write access lines from whether its access
    logger has a handler (its own or, propagating, the root's); each worker of ``--workers N`` runs this after
    uvicorn set that logger up, so leaving it propagating would log every request of every worker.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    access = logging.getLogger(ACCESS_LOGGER)
    access.handlers[:] = []
    access.propagate = False
