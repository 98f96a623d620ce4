"""Servers under test, each in its own process: the service (``python -m service``) and the naive baseline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREDICT_PATH = "/v1/models/sentiment:predict"
READY_PATH = "/v2/health/ready"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: a label for the tables, its command (``{port}`` is filled in) and environment."""

    label: str
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str = READY_PATH
    predict_path: str = PREDICT_PATH
    metrics_path: str | None = "/metrics"


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.spec.predict_path}"

    @property
    def metrics_url(self) -> str | None:
        path = self.spec.metrics_path
        return f"http://127.0.0.1:{self.port}{path}" if path else None

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process and all its descendants (uvicorn workers, gRPC fronts)."""
        return sum(_cpu_of(pid) for pid in _descendants(self.process.pid))


def service_spec(
    label: str,
    variant: str = "fp32",
    settings: Mapping[str, str] | None = None,
    repository: Path = Path("models"),
    model: str = "sentiment",
) -> ServerSpec:
    """The service with the defaults a user gets (log level included), overridden by ``ATTENTION_SERVE_<NAME>``
    settings (names without prefix); ``repository`` and ``model``: what it serves and what the load asks."""
    env = {f"ATTENTION_SERVE_{name.upper()}": value for name, value in (settings or {}).items()}
    # A port of its own for gRPC (never the shared default 8001: workers bind it with SO_REUSEPORT).
    env.setdefault("ATTENTION_SERVE_GRPC_PORT", str(free_port()))
    command = (
        sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", "{port}",
        "--model-repository", str(repository), "--variant", variant,
    )  # fmt: skip
    return ServerSpec(label, command, env, predict_path=PREDICT_PATH.replace("sentiment", model))


def naive_spec(
    label: str,
    variant: str = "fp32",
    threads: int = 0,
    noop: bool = False,
    model_dir: Path | None = None,
    model: str = "sentiment",
) -> ServerSpec:
    """The naive baseline; with ``noop`` its constant-answer route (the uvicorn + FastAPI floor) is loaded."""
    command = (
        sys.executable, str(ROOT / "bench" / "naive_server.py"), "--port", "{port}",
        "--model-dir", str(model_dir or Path("models/sentiment/1")), "--variant", variant, "--threads", str(threads),
    )  # fmt: skip
    path = PREDICT_PATH.replace("sentiment", model)
    path = path.replace(":predict", ":noop") if noop else path
    return ServerSpec(label, command, ready_path="/ready", predict_path=path, metrics_path=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(spec: ServerSpec, log_dir: Path, ready_within_s: float = 120) -> RunningServer:
    """Start the server and wait (bounded) until its readiness path answers 200."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in spec.command]
    log = log_dir / f"server-{spec.label.replace(' ', '_').replace('/', '_')}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
    with log.open("wb") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    server = RunningServer(spec, process, port, log)
    deadline = time.monotonic() + ready_within_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{spec.label} exited with {process.returncode}: {log.read_text()[-1500:]}")
        if _answers(f"http://127.0.0.1:{port}{spec.ready_path}"):
            return server
        time.sleep(0.2)
    stop(server)
    raise RuntimeError(f"{spec.label} was not ready within {ready_within_s}s: {log.read_text()[-1500:]}")


def stop(server: RunningServer, timeout_s: float = 30) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextmanager
def running(specs: list[ServerSpec], log_dir: Path) -> Iterator[list[RunningServer]]:
    """Start every server (one after the other), yield them, and stop them all whatever happens."""
    servers: list[RunningServer] = []
    try:
        for spec in specs:
            servers.append(start(spec, log_dir))
        yield servers
    finally:
        for server in servers:
            stop(server)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of stat)


def resident_bytes(server: RunningServer) -> int:
    """Resident memory of the server process and its direct children (uvicorn workers), in bytes."""
    return sum(_rss_of(pid) for pid in [server.process.pid, *_children(server.process.pid)])


def worker_pids(server: RunningServer) -> set[int]:
    """The worker processes (the children; the process itself where it has none)."""
    return set(_children(server.process.pid)) or {server.process.pid}


def worker_resident_bytes(server: RunningServer) -> list[int]:
    """Resident memory of each worker process (the children; the process itself where it has none)."""
    children = _children(server.process.pid)
    return [_rss_of(pid) for pid in children] if children else [_rss_of(server.process.pid)]


def _rss_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    """Children started by any thread of ``pid``."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    children = []
    for task in tasks:
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending += _children(current)
    return found
