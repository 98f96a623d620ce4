"""The real server over real HTTP."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RunningServer, start_server

pytestmark = pytest.mark.e2e
TEXT = "Honestly the autonomous shuttle was smooth and on time."


def test_text_request_returns_label_tokens_offsets_and_attention(bundled_server: RunningServer) -> None:
    response = httpx.post(f"{bundled_server.url}/v1/models/sentiment:predict", json={"instances": [TEXT]}, timeout=10)
    assert response.status_code == 200
    row = response.json()["predictions"][0]
    assert row["label"] in row["probabilities"]
    assert len(row["tokens"]) == len(row["offsets"]) == len(row["attention"])
    assert abs(sum(row["attention"]) - 1) < 1e-5
    assert response.headers["content-type"] == "application/json"


def in_progress(server: RunningServer) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        if line.startswith('attention_serve_requests_in_progress{protocol="native"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def not_ready_soon(server: RunningServer) -> bool:
    """Readiness turns false (or the listener closes) promptly after the stop signal."""
    for _ in range(500):
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code != 200:
                return True
        except httpx.TransportError:
            return True
        time.sleep(0.01)
    return False


def test_sigterm_lets_the_request_in_flight_finish_then_exits(
    make_repository: Callable[..., Path], tmp_path: Path
) -> None:
    server = start_server(make_repository(), tmp_path / "server.log")
    body = json.dumps({"instances": [TEXT]}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = "POST /v1/models/sentiment:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        for _ in range(500):  # bounded wait until the server counts the request as in progress
            if in_progress(server) >= 1:
                break
            time.sleep(0.01)
        assert in_progress(server) == 1
        server.process.terminate()  # SIGTERM while the request's body is still arriving
        for _ in range(500):  # readiness turns false (or the listener closes) at once
            try:
                if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code != 200:
                    break
            except httpx.TransportError:
                break
            time.sleep(0.01)
        sock.sendall(body[10:])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert b'"predictions"' in reply
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status is SIGTERM's (143 in a shell);
    # the drain log line proves the lifespan shutdown ran to its end rather than the process being killed.
    assert server.stop() in (0, -signal.SIGTERM)
    assert "model sentiment version 1 unloaded" in server.log.read_text()


def test_several_workers_share_the_port_and_their_metrics_add_up(
    make_repository: Callable[..., Path], tmp_path: Path
) -> None:
    server = start_server(make_repository(), tmp_path / "server.log", env={"ATTENTION_SERVE_WORKERS": "2"})
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:  # keep-alive: one worker per connection
            for _ in range(12):
                assert client.post("/v1/models/sentiment:predict", json={"instances": [TEXT]}).status_code == 200
        for _ in range(12):  # new connections spread over the workers
            response = httpx.post(f"{server.url}/v1/models/sentiment:predict", json={"instances": [TEXT]}, timeout=10)
            assert response.status_code == 200
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        line = 'attention_serve_requests_total{model="sentiment",outcome="success",protocol="native",version="1"}'
        assert f"{line} 24.0" in metrics
    finally:
        assert server.stop() in (0, -signal.SIGTERM)
    assert server.log.read_text().count("stop signal: not ready") == 2  # each worker turned unready


def children_of(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_workers_stop_when_their_supervisor_is_killed(make_repository: Callable[..., Path], tmp_path: Path) -> None:
    server = start_server(make_repository(), tmp_path / "server.log", env={"ATTENTION_SERVE_WORKERS": "2"})
    workers = [p for p in children_of(server.process.pid) if "worker_app" in Path(f"/proc/{p}/cmdline").read_text()]
    workers = workers or children_of(server.process.pid)
    assert len(workers) >= 2
    server.process.kill()  # SIGKILL: the supervisor cannot stop them itself
    server.stop()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.1)
    alive = [p for p in workers if Path(f"/proc/{p}").exists()]
    assert not alive, f"orphaned workers {alive}: {server.log.read_text()[-1500:]}"
    with pytest.raises(httpx.TransportError):  # and nothing holds the port any more
        httpx.get(f"{server.url}/v2/health/live", timeout=2)


def logged(server: RunningServer, logger: str) -> int:
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    return sum(1 for line in lines if line.get("logger") == logger)


@pytest.mark.parametrize(
    ("workers", "log_requests", "per_request"), [("1", "false", 0), ("2", "false", 0), ("2", "true", 1)]
)
def test_only_log_requests_logs_requests_with_one_worker_or_many(
    make_repository: Callable[..., Path], tmp_path: Path, workers: str, log_requests: str, per_request: int
) -> None:
    env = {"ATTENTION_SERVE_WORKERS": workers, "ATTENTION_SERVE_LOG_REQUESTS": log_requests}
    server = start_server(make_repository(), tmp_path / "server.log", env=env)
    try:
        for _ in range(30):  # new connections, spread over the workers
            response = httpx.post(f"{server.url}/v1/models/sentiment:predict", json={"instances": [TEXT]}, timeout=10)
            assert response.status_code == 200
    finally:
        assert server.stop() in (0, -signal.SIGTERM)
    assert logged(server, "uvicorn.access") == 0
    assert logged(server, "service.requests") == 30 * per_request
