"""The gRPC API in-process: inference against the native REST answers, metadata, model configuration, health,
reflection, credentials and the admin RPCs, with tritonclient's messages (and its client where it helps)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import add_version
from tests.service.grpc_helpers import (
    GrpcApp,
    grpc_app,
    ids_request,
    outputs_of,
    rpc_error,
    set_parameter,
    text_request,
)

TEXTS = ["I love this car", "the seats are terrible and the ride is bumpy"]


@pytest.fixture(scope="module", params=["native", "process", "thread", "loop"])
def app(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[GrpcApp]:
    """gRPC in a native front process (the default), in a Python one, on a loop of its own, on the HTTP server's
    loop: each test, each way."""
    root = tmp_path_factory.mktemp("grpc") / "repository"
    add_version(root, 1)
    with grpc_app(root, grpc_server=request.param) as running:
        yield running


def native(app: GrpcApp, texts: list[str]) -> list[dict]:
    predictions: list[dict] = app.http.post("/v1/models/sentiment:predict", json={"instances": texts}).json()[
        "predictions"
    ]
    return predictions


@pytest.mark.parametrize("raw", [True, False], ids=["raw_input_contents", "contents"])
def test_text_infer_matches_the_native_api(app: GrpcApp, raw: bool) -> None:
    response = app.stub.ModelInfer(text_request(TEXTS, raw=raw, id="req-9"))
    assert (response.model_name, response.model_version, response.id) == ("sentiment", "1", "req-9")
    assert [o.name for o in response.outputs] == ["label", "probabilities", "attention", "lengths"]
    assert len(response.raw_output_contents) == 4
    out, expected = outputs_of(response), native(app, TEXTS)
    assert out["label"] == [p["label"] for p in expected]
    np.testing.assert_allclose(out["probabilities"], [list(p["probabilities"].values()) for p in expected], atol=1e-6)
    for row, length, prediction in zip(out["attention"], out["lengths"], expected, strict=True):
        np.testing.assert_allclose(row[:length], prediction["attention"], atol=1e-6)
        assert np.all(row[length:] == 0)


@pytest.mark.parametrize(("datatype", "raw"), [("INT32", True), ("INT64", True), ("INT32", False), ("INT64", False)])
def test_token_ids_in_either_width_and_either_form(app: GrpcApp, datatype: str, raw: bool) -> None:
    ids = np.array([[5, 6, 7, 8]])
    out = outputs_of(app.stub.ModelInfer(ids_request(ids, datatype, raw)))
    expected = app.http.post("/v1/models/sentiment:predict", json={"instances": [[5, 6, 7, 8]]}).json()
    np.testing.assert_allclose(
        out["probabilities"][0], list(expected["predictions"][0]["probabilities"].values()), atol=1e-6
    )


def test_ids_with_a_mask_requested_outputs_and_classification(app: GrpcApp) -> None:
    request = ids_request(np.array([[5, 6, 7, 8], [9, 10, 0, 0]]), model_version="1")
    request.inputs.add(name="attention_mask", datatype="INT64", shape=[2, 4])
    request.raw_input_contents.append(np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype="<i8").tobytes())
    wanted = request.outputs.add(name="probabilities")
    set_parameter(wanted.parameters, "classification", 2)
    request.outputs.add(name="rollout")
    request.outputs.add(name="lengths")
    out = outputs_of(app.stub.ModelInfer(request))
    assert list(out) == ["probabilities", "rollout", "lengths"]
    assert np.asarray(out["lengths"]).tolist() == [4, 2]
    top = out["probabilities"]
    assert len(top) == 4
    assert all(entry.count(":") == 2 for entry in top)
    np.testing.assert_allclose(np.asarray(out["rollout"]).sum(-1), 1, atol=1e-5)


def test_parameters_attention_truncate_and_timeout(app: GrpcApp) -> None:
    request = text_request(["word " * 300])
    set_parameter(request.parameters, "attention", "all")
    set_parameter(request.parameters, "truncate", True)
    set_parameter(request.parameters, "timeout_ms", 5000)
    out = outputs_of(app.stub.ModelInfer(request))
    assert {"self_attention", "rollout", "attention"} <= set(out)
    assert np.asarray(out["lengths"]).tolist() == [128]
    request = text_request(TEXTS)
    set_parameter(request.parameters, "attention", "none")
    assert "attention" not in outputs_of(app.stub.ModelInfer(request))


def test_kserve_style_binary_data_size_beside_raw_contents_is_accepted(app: GrpcApp) -> None:
    request = text_request(TEXTS)
    set_parameter(request.inputs[0].parameters, "binary_data_size", len(request.raw_input_contents[0]))
    assert outputs_of(app.stub.ModelInfer(request))["label"] == [p["label"] for p in native(app, TEXTS)]


def test_health_metadata_and_configuration_agree_with_rest(app: GrpcApp) -> None:
    assert app.stub.ServerLive(pb.ServerLiveRequest()).live
    assert app.stub.ServerReady(pb.ServerReadyRequest()).ready
    assert app.stub.ModelReady(pb.ModelReadyRequest(name="sentiment", version="1")).ready
    assert not app.stub.ModelReady(pb.ModelReadyRequest(name="sentiment", version="9")).ready
    server = app.stub.ServerMetadata(pb.ServerMetadataRequest())
    assert json_format.MessageToDict(server) == app.http.get("/v2").json()
    metadata = json_format.MessageToDict(app.stub.ModelMetadata(pb.ModelMetadataRequest(name="sentiment")))
    rest = app.http.get("/v2/models/sentiment").json()
    for key in ("name", "versions", "platform"):
        assert metadata[key] == rest[key]
    assert [(t["name"], t["datatype"]) for t in metadata["outputs"]] == [
        (t["name"], t["datatype"]) for t in rest["outputs"]
    ]
    config = app.stub.ModelConfig(pb.ModelConfigRequest(name="sentiment", version="1")).config
    rest_config = app.http.get("/v2/models/sentiment/versions/1/config").json()
    assert json_format.MessageToDict(config, preserving_proto_field_name=True) == json_format.MessageToDict(
        json_format.ParseDict(rest_config, type(config)()), preserving_proto_field_name=True
    )


def test_tritonclient_reads_the_model_configuration(app: GrpcApp) -> None:
    client = triton.InferenceServerClient(app.address)
    try:
        config = client.get_model_config("sentiment", as_json=True)["config"]
    finally:
        client.close()
    assert config["name"] == "sentiment"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 256  # the most sequences in one request (max_instances)
    inputs = {t["name"]: t for t in config["input"]}
    assert inputs["input_ids"]["dims"] == ["-1"]
    assert inputs["input_ids"]["optional"]
    outputs = {t["name"]: t for t in config["output"]}
    assert outputs["probabilities"]["dims"] == ["3"]
    assert outputs["offsets"]["dims"] == ["-1", "2"]
    assert outputs["self_attention"]["dims"][-2:] == ["-1", "-1"]
    assert config["dynamic_batching"]["preferred_batch_size"] == [32]


def test_grpc_health_overall_and_per_model(app: GrpcApp) -> None:
    health = health_pb2_grpc.HealthStub(app.channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == serving
    assert health.Check(health_pb2.HealthCheckRequest(service="sentiment")).status == serving
    assert health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")).status == serving
    error = rpc_error(health.Check, health_pb2.HealthCheckRequest(service="absent"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_health_watch_streams_each_status(app: GrpcApp) -> None:
    health = health_pb2_grpc.HealthStub(app.channel)
    for service, status in (
        ("", health_pb2.HealthCheckResponse.SERVING),
        ("sentiment", health_pb2.HealthCheckResponse.SERVING),
        ("absent", health_pb2.HealthCheckResponse.SERVICE_UNKNOWN),
    ):
        stream = health.Watch(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert next(stream).status == status
        stream.cancel()


def test_reflection_lists_the_services_and_serves_their_descriptors(app: GrpcApp) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(app.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
    ]
    listed, described = list(stub.ServerReflectionInfo(iter(requests)))
    names = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto  # the serialized grpc_service.proto


def test_unsupported_rpcs_are_unimplemented_and_errors_reach_tritonclient(app: GrpcApp) -> None:
    error = rpc_error(app.stub.ModelStatistics, pb.ModelStatisticsRequest(name="sentiment"))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    error = rpc_error(app.stub.RepositoryIndex, pb.RepositoryIndexRequest())
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED  # no admin token: the repository RPCs are off
    client = triton.InferenceServerClient(app.address)
    try:
        with pytest.raises(InferenceServerException, match="unknown output 'nope'") as caught:
            client.infer("sentiment", [_text_input()], outputs=[triton.InferRequestedOutput("nope")])
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        client.close()


def _text_input() -> triton.InferInput:
    tensor = triton.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array(TEXTS, dtype=object))
    return tensor


def test_requests_are_counted_under_the_grpc_protocol(app: GrpcApp) -> None:
    app.stub.ModelInfer(text_request(TEXTS))
    metrics = app.http.get("/metrics").text
    assert 'attention_serve_requests_total{model="sentiment",outcome="success",protocol="grpc",version="1"}' in metrics


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcApp]:
    root: Path = tmp_path_factory.mktemp("secured") / "repository"
    add_version(root, 1)
    with grpc_app(root, api_key="inference-key", admin_token="admin-token") as running:
        yield running


def test_the_api_key_is_bearer_metadata_and_probes_are_exempt(secured: GrpcApp) -> None:
    error = rpc_error(secured.stub.ModelInfer, text_request(TEXTS))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = rpc_error(secured.stub.ModelInfer, text_request(TEXTS), metadata=[("authorization", "Bearer wrong")])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    answer = secured.stub.ModelInfer(text_request(TEXTS), metadata=[("authorization", "Bearer inference-key")])
    assert answer.model_name == "sentiment"
    assert secured.stub.ServerReady(pb.ServerReadyRequest()).ready


def test_repository_rpcs_need_the_admin_token(secured: GrpcApp) -> None:
    admin = [("authorization", "Bearer admin-token")]
    error = rpc_error(secured.stub.RepositoryIndex, pb.RepositoryIndexRequest())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    index = secured.stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=admin)
    assert [(m.name, m.version, m.state) for m in index.models] == [("sentiment", "1", "READY")]
    load = pb.RepositoryModelLoadRequest(model_name="sentiment")
    load.parameters["file:1/model.onnx"].bytes_param = b"onnx"
    assert rpc_error(secured.stub.RepositoryModelLoad, load, metadata=admin).code() == grpc.StatusCode.INVALID_ARGUMENT
    secured.stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="sentiment"), metadata=admin)
    assert not secured.stub.ModelReady(pb.ModelReadyRequest(name="sentiment")).ready
    key = [("authorization", "Bearer inference-key")]
    error = rpc_error(secured.stub.ModelInfer, text_request(TEXTS), metadata=key)
    assert error.code() == grpc.StatusCode.NOT_FOUND  # unloaded: waiting cannot bring it back, a load can
    secured.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="sentiment"), metadata=admin)
    assert secured.stub.ModelReady(pb.ModelReadyRequest(name="sentiment")).ready


def test_a_single_worker_refuses_to_share_a_busy_grpc_port(tmp_path: Path) -> None:
    """Without SO_REUSEPORT (one worker) a port already taken fails the start instead of being shared silently."""
    import socket
    import threading

    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.conftest import settings_for

    root = tmp_path / "repository"
    add_version(root, 1)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        for where in ("native", "process", "thread", "loop"):
            running = set(threading.enumerate())
            app = create_app(settings_for(root, grpc_port=taken.getsockname()[1], grpc_server=where))
            with pytest.raises(RuntimeError), TestClient(app):
                pass
            assert not [t for t in threading.enumerate() if t.name == "grpc" and t not in running]  # no loop left


def front_processes(port: int) -> list[int]:
    """This process's gRPC front children serving ``port`` (from /proc; whichever thread started them)."""
    found = []
    children = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            children += (task / "children").read_text().split()
    for child in children:
        command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        front = b"service.protocols.grpc_front" in command or command[0].endswith(b"/grpc_front")
        if front and f"127.0.0.1:{port}".encode() in command:
            found.append(int(child))
    return found


@pytest.mark.parametrize("front", ["native", "process"])
def test_a_front_process_that_dies_is_replaced(tmp_path: Path, front: str) -> None:
    root = tmp_path / "repository"
    add_version(root, 1)
    with grpc_app(root, grpc_server=front) as app:
        port = int(app.address.rsplit(":", 1)[1])
        (front,) = front_processes(port)
        os.kill(front, signal.SIGKILL)
        for _ in range(600):  # bounded wait for the worker to notice and start another front
            try:
                with grpc.insecure_channel(app.address) as channel:
                    answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(text_request(TEXTS), timeout=5)
                break
            except grpc.RpcError:
                time.sleep(0.05)
        else:
            raise AssertionError("gRPC never came back")
        assert answer.model_name == "sentiment"
        assert front_processes(port) not in ([], [front])
    assert front_processes(port) == []  # and the app's stop ended it
