"""The bad-input suite over gRPC: every case answers a proper status code (never UNKNOWN or INTERNAL) with the
REST API's "what and where" message, short and leaking nothing, and the server keeps serving."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from tests.conftest import add_version
from tests.service.grpc_helpers import (
    GrpcApp,
    grpc_app,
    ids_request,
    length_prefixed,
    rpc_error,
    set_parameter,
    text_request,
)
from tests.service.test_bad_input import LIMITS

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
Build = Callable[[], pb.ModelInferRequest]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcApp]:
    root = tmp_path_factory.mktemp("grpc-bad") / "repository"
    add_version(root, 1)
    with grpc_app(root, **LIMITS) as running:
        yield running


def assert_clean(error: grpc.RpcError, code: grpc.StatusCode, fragment: str) -> None:
    assert error.code() == code, (error.code(), error.details())
    details = error.details() or ""
    assert fragment in details, details
    assert len(details) < 1000
    for leak in ("Traceback", "/work", "/tmp", "site-packages", "onnxruntime", ".py"):
        assert leak not in details


def with_params(build: Build, **parameters: object) -> Build:
    def built() -> pb.ModelInferRequest:
        request = build()
        for key, value in parameters.items():
            set_parameter(request.parameters, key, value)  # type: ignore[arg-type]
        return request

    return built


def edited(build: Build, edit: Callable[[pb.ModelInferRequest], object]) -> Build:
    def built() -> pb.ModelInferRequest:
        request = build()
        edit(request)
        return request

    return built


def ok() -> pb.ModelInferRequest:
    return text_request(["fine"])


def raw_text(shape: list[int], raw: bytes, datatype: str = "BYTES", name: str = "text") -> Build:
    def built() -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name="sentiment")
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
        return request

    return built


def add_output(name: str, **parameters: object) -> Callable[[pb.ModelInferRequest], object]:
    def edit(request: pb.ModelInferRequest) -> None:
        output = request.outputs.add(name=name)
        for key, value in parameters.items():
            set_parameter(output.parameters, key, value)  # type: ignore[arg-type]

    return edit


def add_text_input(request: pb.ModelInferRequest) -> None:
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(length_prefixed(["again"]))


def both_raw_and_contents(request: pb.ModelInferRequest) -> None:
    request.inputs[0].contents.bytes_contents.append(b"fine")


def mask_without_raw(request: pb.ModelInferRequest) -> None:
    request.inputs.add(name="attention_mask", datatype="INT64", shape=[1, 2])


def input_parameter(key: str, value: int | str) -> Callable[[pb.ModelInferRequest], object]:
    return lambda request: set_parameter(request.inputs[0].parameters, key, value)


def mask(values: list[int]) -> Callable[[pb.ModelInferRequest], object]:
    def edit(request: pb.ModelInferRequest) -> None:
        request.inputs.add(name="attention_mask", datatype="INT64", shape=[1, len(values)])
        request.raw_input_contents.append(np.array(values, dtype="<i8").tobytes())

    return edit


def ids(values: list[list[int]], datatype: str = "INT64") -> Build:
    return lambda: ids_request(np.array(values), datatype)


def contents(field: str, values: list[object], shape: list[int], datatype: str = "BYTES") -> Build:
    def built() -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name="sentiment")
        tensor = request.inputs.add(name="text", datatype=datatype, shape=shape)
        getattr(tensor.contents, field).extend(values)
        return request

    return built


def no_data() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="sentiment")
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    return request


CASES: list[tuple[str, Build, grpc.StatusCode, str]] = [
    ("empty batch", raw_text([0], b""), INVALID, "input 'text': empty batch"),
    ("too many", lambda: text_request(["ok"] * 9), INVALID, "9 sequences, more than the limit of 8"),
    ("no tokens", lambda: text_request(["   "]), INVALID, "input 'text'[0]: the text has no tokens"),
    ("empty ids", lambda: ids_request(np.zeros((1, 0), dtype=np.int64)), INVALID, "the sequence is empty"),
    ("long text", lambda: text_request(["x" * 501]), INVALID, "text of 501 characters, limit 500"),
    ("long ids", lambda: text_request(["fine", "a " * 200]), INVALID, "200 tokens, more than the model's maximum"),
    ("id 8000", ids([[5, 8000]]), INVALID, "token id 8000 is outside the vocabulary"),
    ("id -1", ids([[5, -1]], "INT32"), INVALID, "token id -1 is outside the vocabulary"),
    ("text and ids", edited(ids([[5, 6]]), add_text_input), INVALID, "send exactly one of 'text' or 'input_ids'"),
    ("unknown input", raw_text([1], length_prefixed(["x"]), name="sentence"), INVALID, "inputs[0].name: expected"),
    ("twice", edited(ok, add_text_input), INVALID, "input 'text' is given twice"),
    ("text as INT64", raw_text([1], b"\0" * 8, "INT64"), INVALID, "datatype: expected BYTES"),
    ("ids as FP32", raw_text([1, 1], b"\0" * 4, "FP32", "input_ids"), INVALID, "expected INT32 or INT64"),
    ("ids as FP16", raw_text([1, 2], b"\0" * 4, "FP16", "input_ids"), INVALID, "expected INT32 or INT64"),
    ("text rank 2", raw_text([2, 2], length_prefixed(["a"] * 4)), INVALID, "shape: expected [batch] or [batch, 1]"),
    ("ids rank 1", raw_text([4], b"\0" * 32, "INT64", "input_ids"), INVALID, "shape: expected [batch, sequence]"),
    ("raw too short", raw_text([1, 4], b"\0" * 12, "INT64", "input_ids"), INVALID, "12 bytes of binary data"),
    ("bytes cut", raw_text([1], b"\x05\0"), INVALID, "ends inside an element's length"),
    ("bytes overrun", raw_text([1], b"\x09\0\0\0abc"), INVALID, "runs past the end of the data"),
    ("bytes count", raw_text([3], length_prefixed(["a", "b"])), INVALID, "holds 2 elements, the shape says 3"),
    ("bad utf-8 raw", raw_text([1], length_prefixed([b"\xff\xfe"])), INVALID, "element 0 is not valid UTF-8"),
    ("bad utf-8", contents("bytes_contents", [b"\xff"], [1]), INVALID, "bytes_contents[0]: not valid UTF-8"),
    ("raw and contents", edited(ok, both_raw_and_contents), INVALID, "in contents or in raw_input_contents, not both"),
    ("raw count", edited(ids([[5, 6]]), mask_without_raw), INVALID, "raw_input_contents: 1 entries for 2 inputs"),
    ("contents field", contents("int_contents", [1], [1]), INVALID, "BYTES data goes in contents.bytes_contents"),
    ("contents count", contents("bytes_contents", [b"a", b"b"], [3]), INVALID, "2 elements of data, the shape [3]"),
    ("no data", no_data, INVALID, "input 'text': no data"),
    ("no inputs", lambda: pb.ModelInferRequest(model_name="sentiment"), INVALID, "inputs: expected a non-empty list"),
    ("mask", edited(ids([[5, 6]]), mask([0, 1])), INVALID, "attention_mask: must match input_ids and be ones then"),
    ("unknown output", edited(ok, add_output("nope")), INVALID, "unknown output 'nope'"),
    ("output twice", edited(edited(ok, add_output("label")), add_output("label")), INVALID, "asked for twice"),
    ("classify label", edited(ok, add_output("label", classification=2)), INVALID, "applies to 'probabilities'"),
    ("classify str", edited(ok, add_output("probabilities", classification="2")), INVALID, "classification a count"),
    ("truncate str", with_params(ok, truncate="yes"), INVALID, "parameters.truncate: expected true or false"),
    ("timeout_ms", with_params(ok, timeout_ms=-5), INVALID, "parameters.timeout_ms"),
    ("timeout str", with_params(ok, timeout="5"), INVALID, "parameters.timeout: expected microseconds"),
    ("attention", with_params(ok, attention="heads"), INVALID, "parameters.attention: expected one or a list"),
    ("attention+outputs", edited(with_params(ok, attention="all"), add_output("label")), INVALID, "not both"),
    ("unknown param", with_params(ok, shiny=True), INVALID, "parameters: unsupported parameter(s) ['shiny']"),
    ("size mismatch", edited(ok, input_parameter("binary_data_size", 3)), INVALID, "binary_data_size 3 differs from"),
    (
        "size, no raw",
        edited(contents("bytes_contents", [b"a"], [1]), input_parameter("binary_data_size", 5)),
        INVALID,
        "binary_data_size without raw_input_contents",
    ),
    ("shared memory", edited(ok, input_parameter("shared_memory_region", "r0")), INVALID, "shared-memory tensors"),
    ("unknown model", lambda: text_request(["ok"], model="absent"), NOT_FOUND, "unknown model 'absent'"),
    ("huge name", lambda: text_request(["ok"], model="m" * 3000), NOT_FOUND, "unknown model 'mmmm"),
    ("version 3", lambda: text_request(["ok"], model_version="3"), NOT_FOUND, "no serving version 3"),
    ("version x1", lambda: text_request(["ok"], model_version="x1"), INVALID, "version 'x1' is not a positive"),
    ("version 0", lambda: text_request(["ok"], model_version="0"), INVALID, "not a positive integer"),
]


@pytest.mark.parametrize(("build", "code", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_infer_requests(app: GrpcApp, build: Build, code: grpc.StatusCode, fragment: str) -> None:
    assert_clean(rpc_error(app.stub.ModelInfer, build()), code, fragment)


def test_a_message_over_the_body_limit_is_refused_by_grpc_itself(app: GrpcApp) -> None:
    error = rpc_error(app.stub.ModelInfer, text_request(["a" * 5000]))
    assert_clean(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max")


NOT_A_MESSAGE = {"garbage": b"\xff\xff\xff", "cut short": b"\x0a\x05ab", "bad wire type": b"\x0f\x00"}
UNARY_METHODS = [
    ("/inference.GRPCInferenceService/ModelInfer", "inference.ModelInferRequest"),
    ("/inference.GRPCInferenceService/ModelMetadata", "inference.ModelMetadataRequest"),
    ("/inference.GRPCInferenceService/ServerLive", "inference.ServerLiveRequest"),
    ("/grpc.health.v1.Health/Check", "grpc.health.v1.HealthCheckRequest"),
]


@pytest.mark.parametrize("body", NOT_A_MESSAGE.values(), ids=NOT_A_MESSAGE.keys())
@pytest.mark.parametrize(("method", "type_name"), UNARY_METHODS, ids=[m[0].rsplit("/", 1)[1] for m in UNARY_METHODS])
def test_bytes_that_do_not_parse_are_invalid_argument(app: GrpcApp, method: str, type_name: str, body: bytes) -> None:
    call = app.channel.unary_unary(method)  # no serializer or deserializer: the bytes go out as they are
    assert_clean(rpc_error(call, body), INVALID, f"the request does not parse as {type_name}")


def test_a_model_name_that_is_not_utf8_does_not_parse(app: GrpcApp) -> None:
    call = app.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    assert_clean(rpc_error(call, b"\x0a\x02\xff\xfe"), INVALID, "does not parse as inference.ModelInferRequest")


def test_streaming_methods_check_their_requests_too(app: GrpcApp) -> None:
    watch = app.channel.unary_stream("/grpc.health.v1.Health/Watch")
    assert_clean(rpc_error(lambda body: list(watch(body, timeout=10)), b"\xff"), INVALID, "does not parse")
    reflection = app.channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    error = rpc_error(lambda body: list(reflection(iter([body]), timeout=10)), b"\xff")
    assert_clean(error, INVALID, "does not parse as grpc.reflection.v1alpha.ServerReflectionRequest")


@pytest.mark.parametrize(
    ("method", "request_", "code", "fragment"),
    [
        ("ModelMetadata", pb.ModelMetadataRequest(name="absent"), NOT_FOUND, "unknown model 'absent'"),
        ("ModelMetadata", pb.ModelMetadataRequest(name="sentiment", version="x"), INVALID, "not a positive integer"),
        ("ModelConfig", pb.ModelConfigRequest(name="sentiment", version="7"), NOT_FOUND, "no serving version 7"),
        ("ModelConfig", pb.ModelConfigRequest(name="n" * 3000), NOT_FOUND, "unknown model 'nnn"),
        ("ModelReady", pb.ModelReadyRequest(name="absent"), NOT_FOUND, "unknown model 'absent'"),
        ("ModelReady", pb.ModelReadyRequest(name="sentiment", version="-1"), INVALID, "not a positive integer"),
    ],
)
def test_bad_metadata_requests(
    app: GrpcApp, method: str, request_: object, code: grpc.StatusCode, fragment: str
) -> None:
    assert_clean(rpc_error(getattr(app.stub, method), request_), code, fragment)


def test_the_server_keeps_serving_after_all_of_it(app: GrpcApp) -> None:
    for _, build, _, _ in CASES:
        with pytest.raises(grpc.RpcError):
            app.stub.ModelInfer(build())
    for body in NOT_A_MESSAGE.values():
        with pytest.raises(grpc.RpcError):
            app.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(body)
    assert app.stub.ModelInfer(text_request(["still here"])).model_name == "sentiment"
    metrics = app.http.get("/metrics").text
    assert 'protocol="grpc"' in metrics
    assert 'outcome="error"' not in metrics


def test_more_sequences_than_the_queue_holds_is_invalid_not_a_reason_to_retry(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    add_version(root, 1)
    with grpc_app(root, max_instances=8, max_queue_size=8) as small:
        error = rpc_error(small.stub.ModelInfer, text_request(["ok"] * 9))
    assert_clean(error, INVALID, "9 sequences, more than the limit of 8")
