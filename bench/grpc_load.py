"""The gRPC load generator (ghz is not available here): several processes, each a ``grpc.aio`` event loop keeping
its share of ``concurrency`` ModelInfer calls outstanding (a closed loop, like ``wrk -c``), for a fixed time.

Requests are serialized once up front and sent as bytes through a generic unary stub (no per-call protobuf work on
the client); answers are counted, not parsed. Connections: each process opens ``channels`` channels of its own
(``grpc.use_local_subchannel_pool``), its calls spread over them round-robin, so a server with several workers
(``SO_REUSEPORT``) gets connections on each. The result has the shape of a wrk run (``bench.load.LoadResult``),
with the CPU time of the client processes, so a table can say whether the client was the bottleneck.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from bench.load import LoadResult

METHOD = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class GrpcPlan:
    address: str
    bodies: Path  # serialized ModelInferRequest messages (see write_requests)
    concurrency: int
    duration_s: float
    processes: int = 2
    channels: int = 4
    timeout_s: float = 10.0


def write_requests(messages: Sequence[bytes], path: Path) -> Path:
    """Length-prefixed serialized requests (4-byte little-endian length, then the message)."""
    path.write_bytes(b"".join(len(m).to_bytes(4, "little") + m for m in messages))
    return path


def read_requests(path: Path) -> list[bytes]:
    data, messages, offset = path.read_bytes(), [], 0
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + 4], "little")
        messages.append(data[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return messages


async def _worker(plan: GrpcPlan, share: int, offset: int) -> tuple[int, dict[str, int], np.ndarray]:
    messages = read_requests(plan.bodies)
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]
    channels = [grpc.aio.insecure_channel(plan.address, options=options) for _ in range(max(1, plan.channels))]
    calls = [channel.unary_unary(METHOD) for channel in channels]  # bytes in, bytes out
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + plan.duration_s

    async def loop(index: int) -> None:
        call, position = calls[index % len(calls)], offset + index
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                await call(messages[position % len(messages)], timeout=plan.timeout_s)
                latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] = errors.get(error.code().name, 0) + 1
            position += share

    await asyncio.gather(*(loop(i) for i in range(share)))
    for channel in channels:
        await channel.close()
    return len(latencies), errors, np.asarray(latencies, dtype=np.float64)


def _process(plan: GrpcPlan, share: int, offset: int, pipe: multiprocessing.connection.Connection) -> None:
    import uvloop  # the loop the server runs too; the client's own CPU per call matters here

    cpu = time.process_time()  # every thread of this process (gRPC's own included), the load only
    count, errors, latencies = uvloop.run(_worker(plan, share, offset))
    pipe.send((count, errors, latencies.tobytes(), time.process_time() - cpu))
    pipe.close()


def run_grpc(plan: GrpcPlan) -> LoadResult:
    """One timed run; every process gets an even share of the concurrency (at least one call each)."""
    processes = max(1, min(plan.processes, plan.concurrency))
    shares = [plan.concurrency // processes + (1 if i < plan.concurrency % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    workers = []
    for index, share in enumerate(shares):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_process, args=(plan, share, sum(shares[:index]), send), daemon=True)
        process.start()
        workers.append((process, receive))
    results = [receive.recv() for _, receive in workers]
    for process, _ in workers:
        process.join()
    return _result(plan, results)


# wrk's error kinds, so both generators fill the same tables: refused connections, timeouts, other refusals.
ERROR_KINDS = {"UNAVAILABLE": "connect", "DEADLINE_EXCEEDED": "timeout"}


def _result(plan: GrpcPlan, results: list[tuple[int, dict[str, int], bytes, float]]) -> LoadResult:
    latencies = np.concatenate([np.frombuffer(r[2], dtype=np.float64) for r in results]) * 1000.0
    detail = {"status": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    for _, found, _, _ in results:
        for code, count in found.items():
            detail[ERROR_KINDS.get(code, "status")] += count
    ok, errors = sum(r[0] for r in results), sum(detail.values())
    span = plan.duration_s  # each process times its own calls; starting the processes is not counted

    def percentile(q: float) -> float:
        return float(np.percentile(latencies, q)) if len(latencies) else float("nan")

    return LoadResult(
        connections=plan.concurrency,
        requests=ok + errors,
        duration_s=span,
        requests_per_s=(ok + errors) / span,
        ok_requests_per_s=ok / span,
        p50_ms=percentile(50),
        p90_ms=percentile(90),
        p99_ms=percentile(99),
        max_ms=float(latencies.max()) if len(latencies) else float("nan"),
        errors=errors,
        error_detail=detail,
        client_cpu_s=sum(r[3] for r in results),
    )
