"""``python -m service``: start the server (uvicorn, uvloop, httptools; gRPC in a native front process shared by the
workers where it is built, else in a front process per worker) with the settings."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from service.app import create_app
from service.lifecycle import stop_with_parent
from service.logs import configure_logging
from service.metrics import MULTIPROCESS_ENV
from service.protocols.grpc_process import native_front
from service.protocols.grpc_server import address
from service.protocols.grpc_shared import SharedFront
from service.providers import places_on_accelerator
from service.settings import ENV_PREFIX, Settings

FACTORY = "service.__main__:worker_app"
SUPERVISOR_ENV = "ATTENTION_SERVE_SUPERVISOR_PID"  # not a setting: how a worker knows the process that started it


def parse_args(argv: Sequence[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve the model repository.")
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (default 8001; 0 turns gRPC off)")
    parser.add_argument("--model-repository", type=Path, help="root of <name>/<version>/ folders (default models)")
    parser.add_argument("--variant", choices=["fp32", "optimized", "int8", "fp16"], help="graph variant to serve")
    parser.add_argument("--workers", type=int, help="server processes (default 0: one per core on CPU, else 1)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    return {key: value for key, value in vars(args).items() if value is not None}


def worker_app() -> FastAPI:
    """The app of one worker process (``--workers`` > 1): settings from the environment, logging as configured."""
    settings = Settings()
    configure_logging(settings.log_level)
    supervisor = os.environ.get(SUPERVISOR_ENV, "")
    if supervisor.isdigit():
        stop_with_parent(int(supervisor))
    return create_app(settings)


def main(argv: Sequence[str] | None = None) -> None:
    overrides = parse_args(argv)
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    workers = settings.worker_count(places_on_accelerator(settings.providers))
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_config": None,
        "access_log": False,
        "limit_concurrency": settings.max_connections,
        "timeout_graceful_shutdown": int(settings.graceful_shutdown_s) or None,
        "server_header": False,
    }
    if workers == 1:
        uvicorn.run(create_app(settings.model_copy(update={"workers": 1})), **options)
        return
    # Each worker process builds its own app from the environment: hand the command-line flags on that way,
    # and give Prometheus a folder where the workers' metrics meet.
    overrides["workers"] = workers
    os.environ.update({f"{ENV_PREFIX}{key.upper()}": str(value) for key, value in overrides.items()})
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    with tempfile.TemporaryDirectory(prefix="attention-serve-workers-") as folder:
        os.environ[MULTIPROCESS_ENV] = folder
        front = shared_front(settings, Path(folder) / "grpc-front.sock")
        if front is not None:
            try:
                front.start()
            except RuntimeError as error:
                raise SystemExit(str(error)) from error
            os.environ.update(front.environment)
        try:
            uvicorn.run(FACTORY, factory=True, workers=workers, **options)
        finally:
            if front is not None:
                front.stop()


def shared_front(settings: Settings, workers_socket: Path) -> SharedFront | None:
    """The gRPC front every worker relays to, where gRPC runs natively (``grpc_server`` auto with the native front
    built, or native); None otherwise (each worker then starts its own front, or serves gRPC in-process)."""
    program = native_front()
    if not settings.grpc_port or settings.grpc_server not in ("auto", "native") or program is None:
        return None
    where = address(settings.host, settings.grpc_port)
    return SharedFront(program, where, settings.max_body_bytes, settings.log_level, workers_socket)


if __name__ == "__main__":
    main()
