"""The real server's gRPC side: SIGTERM drains it like HTTP, and several workers all serve the one gRPC port
(through the native front they share, by default; or each through a Python front of its own)."""

from __future__ import annotations

import os
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


def worker_processes(server: RunningServer) -> list[int]:
    children = children_of(server.process.pid)
    return [p for p in children if b"multiprocessing.spawn" in Path(f"/proc/{p}/cmdline").read_bytes()]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_for_workers(server: RunningServer, count: int) -> None:
    for _ in range(3000):  # ready means one worker is; wait (bounded) until the others have started too
        if server.log.read_text().count("Application startup complete") == count:
            return
        time.sleep(0.01)
    raise AssertionError("the workers did not all start")


def cpu_spent_on_one_connection(server: RunningServer, workers: list[int]) -> dict[int, int]:
    """Each worker's CPU ticks while 20 waves of 32 calls run on one client connection."""
    before = {pid: cpu_ticks(pid) for pid in workers}
    with grpc.insecure_channel(server.grpc_address, options=OWN_CONNECTION) as channel:
        infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        for _ in range(20):
            calls = [infer.future(text_request(["hello there"] * 8), timeout=30) for _ in range(32)]
            assert all(call.result().model_name == "sentiment" for call in calls)
    return {pid: cpu_ticks(pid) - before[pid] for pid in workers}


def test_one_grpc_connection_is_served_by_every_worker(make_repository: Callable[..., Path], tmp_path: Path) -> None:
    """The native front is shared by the workers and sends each call to the least busy one: the streams of one
    client connection reach every worker (a front per worker would keep them all on one)."""
    server = start_server(make_repository(), tmp_path / "server.log", env={"ATTENTION_SERVE_WORKERS": "2"})
    try:
        wait_for_workers(server, 2)
        workers = worker_processes(server)
        assert len(workers) == 2
        spent = cpu_spent_on_one_connection(server, workers)
    finally:
        assert server.stop() in (0, -signal.SIGTERM)
    assert min(spent.values()) >= 0.2 * sum(spent.values()), spent  # both workers answered a good share
    log = server.log.read_text()
    assert log.count("gRPC listening on") == 1
    assert "shared by the workers" in log


def test_with_a_python_front_per_worker_every_worker_serves_grpc_on_the_same_port(
    make_repository: Callable[..., Path], tmp_path: Path
) -> None:
    env = {"ATTENTION_SERVE_WORKERS": "2", "ATTENTION_SERVE_GRPC_SERVER": "process"}
    server = start_server(make_repository(), tmp_path / "server.log", env=env)
    for _ in range(3000):  # ready means one worker is; wait (bounded) until the other has bound gRPC too
        if server.log.read_text().count("gRPC listening on") == 2:
            break
        time.sleep(0.01)
    channels = [grpc.insecure_channel(server.grpc_address, options=OWN_CONNECTION) for _ in range(16)]
    try:
        for channel in channels:  # sixteen connections: all on one worker would be a 1-in-32,768 chance
            assert pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(text_request(["hello"])).model_name
        workers = worker_processes(server)
        counts = worker_connections(workers, int(server.grpc_address.rsplit(":", 1)[1]))
        assert len([pid for pid, count in counts.items() if count]) == 2, counts  # both workers answered
        assert sum(counts.values()) == 16
    finally:
        for channel in channels:
            channel.close()
        assert server.stop() in (0, -signal.SIGTERM)
    assert server.log.read_text().count("gRPC listening on") == 2


def test_a_shared_front_that_dies_is_replaced_and_the_workers_reconnect(
    make_repository: Callable[..., Path], tmp_path: Path
) -> None:
    server = start_server(make_repository(), tmp_path / "server.log", env={"ATTENTION_SERVE_WORKERS": "2"})
    try:
        wait_for_workers(server, 2)
        (front,) = [
            p for p in children_of(server.process.pid) if b"grpc_front" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        os.kill(front, signal.SIGKILL)
        for _ in range(600):  # bounded wait for the supervisor to start another and the workers to reconnect
            try:
                with grpc.insecure_channel(server.grpc_address, options=OWN_CONNECTION) as channel:
                    infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
                    calls = [infer.future(text_request(["back again"]), timeout=10) for _ in range(16)]
                    assert all(call.result().model_name == "sentiment" for call in calls)
                break
            except grpc.RpcError:
                time.sleep(0.05)
        else:
            raise AssertionError("gRPC never came back")
        workers = worker_processes(server)
        assert len(workers) == 2  # no worker was lost on the way
        for _ in range(100):  # both reconnect (each notices within its health push's second): both answer again
            spent = cpu_spent_on_one_connection(server, workers)
            if min(spent.values()) >= 0.2 * sum(spent.values()):
                break
        else:
            raise AssertionError(f"a worker did not reconnect: {spent}")
    finally:
        assert server.stop() in (0, -signal.SIGTERM)
    log = server.log.read_text()
    assert "the shared gRPC front process ended" in log
    assert log.count("gRPC listening on") == 2
