"""The server's one native gRPC front, for several workers: started by the supervisor (``python -m service``)
before the workers, every worker connecting its relay to it (``grpc_process.AttachedFront``).

With a front per worker, the kernel hands each gRPC *connection* to one worker (``SO_REUSEPORT``), and every call
on it stays there: a client with one channel, as gRPC clients connect, keeps one core busy while the others idle,
and a few connections land unevenly. The shared front sends each *call* to the worker with the fewest calls in
flight (``native/grpc_front.cc``). The supervisor holds a control socket to it: READY (the port) comes back on it,
and the front stops when it closes (once the workers have drained theirs: each worker's STOP takes it out of the
rotation). If the front ends on its own, a watcher starts another on the same port and the workers reconnect.

Standard library only (and the relay's framing): the supervisor does not load the models.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.protocols.grpc_relay import HEADER, Kind

log = logging.getLogger("service.protocols.grpc_server")
SHARED_FRONT_ENV = "ATTENTION_SERVE_GRPC_SHARED_FRONT"  # not a setting: "PORT SUPERVISOR-PID PATH", to the workers
READY_WITHIN_S = 60.0
RESTART_PAUSE_S = 1.0


def read_frame(connection: socket.socket) -> tuple[Kind, bytes]:
    """One whole frame (blocking); ``EOFError`` when the other end closed."""

    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = connection.recv(size - len(data))
            if not chunk:
                raise EOFError("the gRPC front closed its control socket")
            data += chunk
        return data

    length, kind, _ = HEADER.unpack(exactly(HEADER.size))
    return Kind(kind), exactly(length)


class SharedFront:
    """The native front process serving gRPC for every worker, and the supervisor's hold on it."""

    def __init__(
        self, program: str, address: str, max_message_bytes: int, log_level: str, workers_socket: Path
    ) -> None:
        self.program, self.address, self.workers_socket = program, address, workers_socket
        self.options = ["--max-message-bytes", str(max_message_bytes), "--log-level", log_level]
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def environment(self) -> dict[str, str]:
        """What tells a worker to connect to this front: its port, who started it, and the workers' socket."""
        return {SHARED_FRONT_ENV: f"{self.port} {os.getpid()} {self.workers_socket}"}

    def start(self) -> None:
        """Start the front, wait until it listens (``RuntimeError`` with its reason if it cannot), and watch it."""
        self._launch(self.address)
        self._watcher = threading.Thread(target=self._watch, name="grpc-front-watch", daemon=True)
        self._watcher.start()

    def _launch(self, address: str) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            command = [self.program, "--fd", str(theirs.fileno()), "--address", address]
            command += ["--workers-socket", str(self.workers_socket), *self.options]
            # A session of its own, as each worker's front: a terminal's Ctrl-C reaches the supervisor, which
            # stops the workers, then closes the control socket. (S603: this checkout's or image's native front.)
            self._process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), start_new_session=True)  # noqa: S603
        ours.settimeout(READY_WITHIN_S)
        try:
            kind, payload = read_frame(ours)
            answer = json.loads(payload) if kind is Kind.READY else {}
        except (OSError, EOFError) as error:
            answer = {"error": f"the gRPC front did not start ({error})"}
        if "port" not in answer:
            ours.close()
            self._reap()
            raise RuntimeError(f"gRPC: {answer.get('error', 'the front process ended')}")
        ours.settimeout(None)
        self._control, self.port = ours, int(answer["port"])

    def _watch(self) -> None:
        """Start another front (same port) when this one ends while the server still runs."""
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                return
            process.wait()  # stop() ends it too: closing the control socket stops the front
            if self._stopping.is_set():
                return
            log.error("the shared gRPC front process ended (exit code %s); starting another", process.returncode)
            if self._control is not None:
                self._control.close()
            try:
                self._launch(f"{self.address.rsplit(':', 1)[0]}:{self.port}")
            except RuntimeError as error:
                log.error("%s; retrying", error)
                time.sleep(RESTART_PAUSE_S)

    def stop(self, wait_s: float = 10.0) -> None:
        """Close the control socket: the front stops (calls still in flight are cancelled) and exits."""
        self._stopping.set()
        if self._control is not None:
            self._control.close()
        self._reap(wait_s)

    def _reap(self, wait_s: float = 10.0) -> None:
        process = self._process
        if process is None:
            return
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class SharedFrontAddress:
    port: int  # where it serves gRPC
    supervisor: int  # the process that started it (and the workers)
    workers_socket: str  # where a worker connects its relay


def shared_front_of(environment: Mapping[str, str]) -> SharedFrontAddress | None:
    """Where the shared front is, when the supervisor started one."""
    port, supervisor, path = [*environment.get(SHARED_FRONT_ENV, "").split(" ", 2), "", ""][:3]
    if not (port.isdigit() and supervisor.isdigit() and path):
        return None
    return SharedFrontAddress(int(port), int(supervisor), path)
