"""A real server in a subprocess (uvicorn over TCP), for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    log_file: BinaryIO
    grpc_address: str = ""

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.log_file.close()


def predict(
    server: RunningServer, model: str, instances: list[Any], timeout_s: float = 60, **parameters: Any
) -> list[dict[str, Any]]:
    """Native REST ``:predict`` with every attention output (and ``parameters``); the predictions, checked 200."""
    body = {"instances": instances, "parameters": {"attention": "all", **parameters}}
    response = httpx.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=timeout_s)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["predictions"]
    return rows


def probabilities(rows: list[dict[str, Any]]) -> np.ndarray:
    """The predictions' probabilities as a (rows, classes) array, in label order."""
    return np.array([list(row["probabilities"].values()) for row in rows])


def start_server(
    repository: Path, log: Path, env: dict[str, str] | None = None, ready_within: float = 90
) -> RunningServer:
    """Start ``python -m service`` and wait (bounded) until its readiness endpoint answers 200."""
    port, grpc_port = free_port(), free_port()
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    command = [sys.executable, "-m", "service", "--port", str(port), "--model-repository", str(repository)]
    command += ["--grpc-port", str(grpc_port)]
    log_file = log.open("wb")
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    server = RunningServer(process, f"http://127.0.0.1:{port}", log, log_file, f"127.0.0.1:{grpc_port}")
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"server not ready within {ready_within}s: {log.read_text()[-2000:]}")


@pytest.fixture
def bundled_server(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(ROOT / "models", tmp_path / "server.log")
    yield server
    server.stop()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, driven by Playwright (nothing downloads a browser)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"these tests drive Debian's chromium at {CHROMIUM} (apt-get install chromium); none was found")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def console() -> list[str]:
    return []


@pytest.fixture
def page(browser: Browser, server: RunningServer, console: list[str]) -> Iterator[Page]:
    """The viewer, loaded and ready (models listed); console errors and CSP violations are collected."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(20_000)

    def keep(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            console.append(message.text)

    tab.on("console", keep)
    tab.on("pageerror", lambda error: console.append(f"page error: {error}"))
    tab.goto(f"{server.url}/ui")
    expect(tab.locator("#submit")).to_be_enabled()
    yield tab
    context.close()
