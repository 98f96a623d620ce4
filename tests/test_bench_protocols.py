"""bench/protocols.py's pieces: h2load's output read right, gRPC's failed statuses taken out of the throughput, the
request bodies the server would get, and the targets' PASS/MISS; then one tiny real run when h2load is installed.

No timing is asserted (speed is the benchmark's business).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from bench import oip
from bench.corpus import Sample
from bench.h2load import H2Plan, command, grpc_frame, read_log, result, without_failed_rpcs
from bench.protocol_report import findings, table
from bench.report import HttpSummary
from tests.conftest import ROOT

STDOUT = """finished in 2.00s, 150.00 req/s, 40.00KB/s
requests: 300 total, 304 started, 300 done, 297 succeeded, 3 failed, 0 errored, 0 timeout
status codes: 297 2xx, 0 3xx, 0 4xx, 3 5xx
"""


def test_a_run_is_read_from_h2loads_summary_and_its_per_request_log() -> None:
    lines = [f"17000000{i:05d}\t{200 if i >= 3 else 503}\t{1000 * (i + 1)}" for i in range(300)]
    statuses, micros = read_log("\n".join(lines) + "\n")
    plan = H2Plan("http://h/x", Path("body"), (), connections=4, streams=8, duration_s=2)
    run = result(plan, STDOUT, statuses, micros, client_cpu_s=0.5)
    assert (run.connections, run.requests, run.duration_s) == (32, 300, 2.0)
    assert run.ok_requests_per_s == 297 / 2.0
    assert run.error_detail["status"] == 3
    assert run.error_detail["read"] == 3  # h2load's "failed"
    assert run.p50_ms == pytest.approx(np.percentile(np.arange(4, 301), 50))  # the 200s only, in ms
    assert run.max_ms == 300.0


def test_rpcs_the_server_failed_are_errors_not_throughput() -> None:
    plan = H2Plan("http://h/x", Path("body"), (), connections=1, duration_s=2)
    run = result(plan, STDOUT, np.full(300, 200), np.full(300, 1000.0), 0.0)
    failed = without_failed_rpcs(run, 100)
    assert failed.ok_requests_per_s == 200 / 2.0
    assert failed.errors == run.errors + 100
    assert failed.error_detail["status"] == run.error_detail["status"] + 100
    assert without_failed_rpcs(run, 0) is run


def test_the_command_is_http2_with_streams_for_grpc_and_h1_for_rest() -> None:
    grpc_plan = H2Plan("http://h:1/m", Path("b.bin"), ("te: trailers",), connections=4, streams=8, duration_s=3)
    args = command(grpc_plan, Path("log"))
    assert args[args.index("-c") + 1] == "4"
    assert args[args.index("-m") + 1] == "8"
    assert "--h1" not in args
    assert args[args.index("-H") : args.index("-H") + 2] == ["-H", "te: trailers"]
    rest = command(H2Plan("http://h:1/p", Path("b.json"), (), connections=32, h1=True), Path("log"))
    assert "--h1" in rest
    assert "-m" not in rest


def test_grpc_bodies_are_framed_model_infer_requests_with_raw_tensors() -> None:
    samples = [Sample("a", np.arange(1, 41, dtype=np.int32)), Sample("b", np.arange(41, 101, dtype=np.int32))]
    ids = oip.id_rows(samples, 3, 30)
    assert ids.shape == (3, 30)
    assert ids[2, 29] == 90
    framed = grpc_frame(oip.grpc_message(ids))
    assert framed[0] == 0
    assert int.from_bytes(framed[1:5], "big") == len(framed) - 5
    request = pb.ModelInferRequest.FromString(framed[5:])
    assert (request.inputs[0].name, request.inputs[0].datatype, list(request.inputs[0].shape)) == (
        "input_ids",
        "INT64",
        [3, 30],
    )
    np.testing.assert_array_equal(np.frombuffer(request.raw_input_contents[0], "<i8").reshape(3, 30), ids)
    texts = pb.ModelInferRequest.FromString(oip.grpc_message(["héllo", "x"]))
    assert texts.raw_input_contents[0] == oip.length_prefixed(["héllo", "x"])
    assert json.loads(oip.v2_json(ids))["inputs"][0]["data"] == ids.ravel().tolist()
    assert json.loads(oip.native_json(["a", "b"])) == {"instances": ["a", "b"]}


def summary(api: str, per_request: int, connections: int, rate: float, p99: float) -> HttpSummary:
    return HttpSummary(api, per_request, connections, 2, rate, rate * per_request, p99 / 2, p99, 0,
                       {"status": 0}, 1.0, 0.1, {"mean_batch_size": 4.0})  # fmt: skip


def test_targets_pass_and_miss_on_their_ratios() -> None:
    summaries = {
        ("ids", 1, (32, 1), "native REST"): summary("native REST", 1, 32, 1000, 50),
        ("ids", 1, (32, 1), "gRPC"): summary("gRPC", 1, 32, 990, 60),
        ("ids", 1, (4, 8), "gRPC"): summary("gRPC", 1, 32, 900, 70),
        ("ids", 1, (1, 1), "native REST"): summary("native REST", 1, 1, 400, 4.0),
        ("ids", 1, (1, 1), "gRPC"): summary("gRPC", 1, 1, 420, 3.5),
        ("ids", 16, (32, 1), "native REST"): summary("native REST", 16, 32, 100, 500),
        ("ids", 16, (32, 1), "gRPC"): summary("gRPC", 16, 32, 125, 400),
    }
    found = {t.name: t for t in findings(summaries)}
    assert not found["gRPC / native REST req/s, ids, 1 seq/call, c=32"].passed  # 0.99x against 1.0x
    assert found["gRPC 4×8 / gRPC 32×1 req/s, ids, 1 seq/call"].passed  # 0.91x against 0.9x
    assert found["gRPC p99 / native REST p99, ids, 1 seq/call, c=1"].passed
    assert found["gRPC / native REST req/s, ids, 16 seq/call, c=32"].passed  # 1.25x against 1.2x
    assert len(found) == 4  # nothing judged on points that were not measured
    rows = table(summaries).splitlines()
    assert any("| ids | 1 | 4 × 8 | — | — | 900 (70.00) | — | 0.91× |" in row for row in rows)


@pytest.mark.skipif(shutil.which("h2load") is None, reason="needs h2load (Debian: nghttp2-client)")
def test_a_tiny_run_measures_every_api_and_judges_the_targets(tmp_path: Path) -> None:
    args = ["--quick", "--duration", "1", "--concurrency", "1", "--per-request", "1", "--multiplexed", "1x2"]
    args += ["--out", str(tmp_path)]
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "protocols.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    measured = {(s["server"], tuple(s["point"])) for s in results["summaries"]}
    assert measured == {("native REST", (1, 1)), ("v2 REST", (1, 1)), ("gRPC", (1, 1)), ("gRPC", (1, 2))}
    assert all(s["errors"] == 0 and s["requests_per_s"] > 0 for s in results["summaries"])
    # Judged: p99 at c=1 only (no c=32 point, and no 2 × 1 point to hold 1 × 2 against).
    assert [t["name"] for t in results["targets"]] == ["gRPC p99 / native REST p99, ids, 1 seq/call, c=1"]


def test_the_modes_table_has_one_column_per_server() -> None:
    from bench.grpc_modes import table as modes_table

    summaries = {
        (mode, "32 × 1", api): summary(api, 1, 32, rate, 50.0)
        for mode, rate in (("process", 900.0), ("thread", 600.0))
        for api in ("gRPC", "native REST")
    }
    lines = modes_table(summaries, ["process", "thread"]).splitlines()
    assert lines[0].count("req/s (p99 ms) · CPU ms/call · batch") == 2
    assert lines[2] == "| 32 × 1 | gRPC | 900 (50.00) · 1.00 · 4.0 | 600 (50.00) · 1.00 · 4.0 |"
