"""``python -m service``: start the server (uvicorn, uvloop, httptools) with the settings and a few flags."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from service.app import create_app
from service.logs import configure_logging
from service.settings import Settings

log = logging.getLogger("service")


class Server(uvicorn.Server):
    """uvicorn's server, but readiness turns false the moment a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, settings_state: Any) -> None:
        super().__init__(config)
        self._state = settings_state

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._state.repository.stopping = True
        log.info("stop signal %s: not ready; finishing in-flight requests", sig)
        super().handle_exit(sig, frame)


def parse_args(argv: Sequence[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve the model repository.")
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--model-repository", type=Path, help="root of <name>/<version>/ folders (default models)")
    parser.add_argument("--variant", choices=["fp32", "optimized", "int8", "fp16"], help="graph variant to serve")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    return {key: value for key, value in vars(args).items() if value is not None}


def main(argv: Sequence[str] | None = None) -> None:
    settings = Settings(**parse_args(argv))
    configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s) or None,
        server_header=False,
    )
    Server(config, app.state.core).run()


if __name__ == "__main__":
    main()
