"""The real server's gRPC side: SIGTERM drains it like HTTP, and several workers all serve the one gRPC port (each
through its gRPC front process, by default)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.e2e.conftest import RunningServer, start_server
from tests.e2e.test_server import children_of
from tests.service.grpc_helpers import text_request

pytestmark = pytest.mark.e2e
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # a channel of its own TCP connection, not a shared one


def grpc_in_progress(server: RunningServer) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        if line.startswith('attention_serve_requests_in_progress{protocol="grpc"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def refused_soon(address: str) -> grpc.StatusCode | None:
    """The code a fresh connection's RPC gets once the server stops taking RPCs (bounded wait).

    An RPC that reached the server in the instant its stop began may be left unanswered until its own deadline
    (grpc.aio's race, seen once in CI under load): that one says nothing yet, so the next probe decides.
    """
    for _ in range(500):
        with grpc.insecure_channel(address, options=OWN_CONNECTION) as channel:
            try:
                pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=2)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    return error.code()
        time.sleep(0.01)
    return None


def test_sigterm_lets_the_rpc_in_flight_finish_refuses_new_ones_then_exits(
    make_repository: Callable[..., Path], tmp_path: Path
) -> None:
    # A lone sequence waits out the queue delay for company: the RPC is in flight for those seconds.
    env = {"ATTENTION_SERVE_MAX_QUEUE_DELAY_MS": "3000"}
    server = start_server(make_repository(), tmp_path / "server.log", env=env)
    try:
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            in_flight = stub.ModelInfer.future(text_request(["in flight"]), timeout=30)
            for _ in range(500):  # bounded wait until the server counts the RPC as in progress
                if grpc_in_progress(server) >= 1:
                    break
                time.sleep(0.01)
            assert grpc_in_progress(server) == 1
            server.process.terminate()
            assert refused_soon(server.grpc_address) == grpc.StatusCode.UNAVAILABLE
            answer = in_flight.result()
    finally:
        status = server.stop()  # whatever happened: no server or open log left behind for the next test
    assert answer.model_name == "sentiment"
    assert answer.outputs[0].name == "label"
    assert status in (0, -signal.SIGTERM)
    log = server.log.read_text()
    assert log.index("gRPC stopped") < log.index("model sentiment version 1 unloaded")


def worker_connections(workers: list[int], port: int) -> dict[int, int]:
    """Established TCP connections to ``port`` held by each worker process or its gRPC front (a child of it), from
    /proc: socket inodes by fd."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state = int(fields[1].rsplit(":", 1)[1], 16), fields[3]
            if local_port == port and state == "01":  # 01: ESTABLISHED
                inodes[fields[9]] = 0
    counts = dict.fromkeys(workers, 0)
    for worker in workers:
        for pid in (worker, *children_of(worker)):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = fd.readlink().as_posix() if fd.is_symlink() else ""
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    counts[worker] += 1
    return counts


def test_every_worker_serves_grpc_on_the_same_port(make_repository: Callable[..., Path], tmp_path: Path) -> None:
    server = start_server(make_repository(), tmp_path / "server.log", env={"ATTENTION_SERVE_WORKERS": "2"})
    for _ in range(3000):  # ready means one worker is; wait (bounded) until the other has bound gRPC too
        if server.log.read_text().count("gRPC listening on") == 2:
            break
        time.sleep(0.01)
    channels = [grpc.insecure_channel(server.grpc_address, options=OWN_CONNECTION) for _ in range(16)]
    try:
        for channel in channels:  # sixteen connections: all on one worker would be a 1-in-32,768 chance
            assert pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(text_request(["hello"])).model_name
        workers = children_of(server.process.pid)
        counts = worker_connections(workers, int(server.grpc_address.rsplit(":", 1)[1]))
        assert len([pid for pid, count in counts.items() if count]) == 2, counts  # both workers answered
        assert sum(counts.values()) == 16
    finally:
        for channel in channels:
            channel.close()
        assert server.stop() in (0, -signal.SIGTERM)
    assert server.log.read_text().count("gRPC listening on") == 2
