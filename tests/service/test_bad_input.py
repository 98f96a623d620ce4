"""Bad input of every kind gets a clear 4xx JSON error naming what and where — never a 5xx — and leaks nothing."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import settings_for

NATIVE = "/v1/models/sentiment:predict"
V2 = "/v2/models/sentiment/infer"
JSON = {"Content-Type": "application/json"}
LIMITS = {"max_body_bytes": 4096, "max_instances": 8, "max_text_chars": 500}
MAX_ERROR_BYTES = 400  # whatever was sent: an error quotes at most a short, marked prefix of it
HUGE = "n" * 20_000


@pytest.fixture
def client(make_repository: Callable[..., Path]) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(make_repository(), **LIMITS))) as test_client:
        yield test_client


def assert_clean_error(response: object, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert fragment in body["error"], body["error"]
    text = response.text  # type: ignore[attr-defined]
    for leak in ("Traceback", "/work", "/tmp", "site-packages", "onnxruntime", ".py"):
        assert leak not in text
    assert len(response.content) <= MAX_ERROR_BYTES  # type: ignore[attr-defined]


RAW_BODIES = [
    (b'{"instances": ["ok"', "not valid JSON"),
    (b'{"instances": ["ok"]} trailing', "not valid JSON"),
    (b"", "body is empty"),
    (b"[" * 1500 + b"]" * 1500, "not valid JSON"),
    (b'{"instances": [[1, 2, NaN]]}', "not valid JSON"),
    (b'{"instances": [[Infinity]]}', "not valid JSON"),
    (b'{"instances": [[1e400]]}', "not valid JSON"),
    (b'{"instances": ["\xff\xfe bad utf-8"]}', "not valid JSON"),
    (b'{"instances": ["\\ud800 lone surrogate"]}', "not valid JSON"),
    (b'{"instances": [[18446744073709551616]]}', "instances[0][0]: token ids must be integers, got a number"),
]


@pytest.mark.parametrize(("body", "fragment"), RAW_BODIES)
def test_malformed_bodies(client: TestClient, body: bytes, fragment: str) -> None:
    assert_clean_error(client.post(NATIVE, content=body, headers=JSON), 400, fragment)


@pytest.mark.parametrize(("body", "fragment"), RAW_BODIES[:9])
def test_malformed_bodies_on_v2(client: TestClient, body: bytes, fragment: str) -> None:
    assert_clean_error(client.post(V2, content=body, headers=JSON), 400, fragment)


LONG_TEXT = "a " * 200
INSTANCE_CASES = [
    ({"instances": []}, "instances: empty batch"),
    ({"instances": ["ok"] * 9}, "9 sequences, more than the limit of 8"),
    ({"instances": ["   "]}, "instances[0]: the text has no tokens"),
    ({"instances": [[]]}, "instances[0]: the sequence is empty"),
    ({"instances": ["x" * 501]}, "instances[0]: text of 501 characters, limit 500"),
    ({"instances": ["fine", LONG_TEXT]}, "instances[1]: 200 tokens, more than the model's maximum of 128"),
    ({"instances": [[5, 8000]]}, "instances[0]: token id 8000 is outside the vocabulary"),
    ({"instances": [[5, -1]]}, "instances[0]: token id -1 is outside the vocabulary"),
    ({"instances": [[5, "6"]]}, "instances[0][1]: token ids must be integers, got a string"),
    ({"instances": [[5, 6.0]]}, "instances[0][1]: token ids must be integers, got a number"),
    ({"instances": [[5, False]]}, "instances[0][1]: token ids must be integers, got a boolean"),
    ({"instances": [{"input_ids": [5], "text": "both"}]}, "instances[0]: expected an object with exactly one"),
    ({"instances": [3]}, "instances[0]: expected a text, a list of token ids, or an object"),
    ({"instances": "text"}, "instances: expected a list, got a string"),
    ({"instances": ["ok"], "inputs": ["ok"]}, "send exactly one of 'instances'"),
    ({"instances": ["ok"], "extra": 1}, "body: unknown field(s) ['extra']"),
    ({"instances": ["ok"], "signature_name": "other"}, "signature_name: only 'serving_default'"),
    ({"instances": ["ok"], "parameters": {"attention": "heads"}}, "parameters.attention"),
    ({"instances": ["ok"], "parameters": {"truncate": "yes"}}, "parameters.truncate: expected true or false"),
    ({"instances": ["ok"], "parameters": {"timeout_ms": -5}}, "parameters.timeout_ms"),
    ({"instances": [{"input_ids": [5, 6], "attention_mask": [0, 1]}]}, "instances[0].attention_mask"),
    (["ok"], "body: expected a JSON object, got a list"),
]


@pytest.mark.parametrize(("body", "fragment"), INSTANCE_CASES)
def test_bad_instances(client: TestClient, body: object, fragment: str) -> None:
    assert_clean_error(client.post(NATIVE, json=body), 400, fragment)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/x-java-serialized-object",
        "application/python-pickle",
        "application/x-msgpack",
    ],
)
def test_only_json_is_accepted(client: TestClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(NATIVE, content=b'{"instances": ["ok"]}', headers=headers)
    assert_clean_error(response, 415, "Content-Type must be application/json")
    if content_type is not None:
        assert_clean_error(client.post(V2, content=b"{}", headers=headers), 415, "Content-Type must be")


@pytest.mark.parametrize("path", [NATIVE, V2])
def test_compressed_bodies_are_refused(client: TestClient, path: str) -> None:
    body = gzip.compress(b'{"instances": ["ok"]}')
    response = client.post(path, content=body, headers={**JSON, "Content-Encoding": "gzip"})
    assert_clean_error(response, 415, "compressed request bodies ('gzip') are not accepted")


def test_body_over_the_limit_is_refused_declared_or_chunked(client: TestClient) -> None:
    big = b'{"instances": ["' + b"a" * 5000 + b'"]}'
    assert_clean_error(client.post(NATIVE, content=big, headers=JSON), 413, "limit is 4096")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    response = client.post(NATIVE, content=chunks(), headers=JSON)  # no Content-Length: chunked
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert_clean_error(response, 413, "exceeds the limit of 4096 bytes")


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("post", "/v1/models/absent:predict", 404, "unknown model 'absent'"),
        ("post", "/v1/models/sentiment/versions/3:predict", 404, "no serving version 3"),
        ("post", "/v1/models/sentiment/versions/x1:predict", 400, "version 'x1' is not a positive integer"),
        ("post", "/v2/models/absent/infer", 404, "unknown model 'absent'"),
        ("get", "/v1/models/absent", 404, "unknown model"),
        ("get", "/v2/models/sentiment/versions/0", 400, "not a positive integer"),
        ("get", "/no/such/route", 404, "not found"),
        ("delete", NATIVE, 405, "method not allowed"),
    ],
)
def test_unknown_models_versions_and_routes(
    client: TestClient, method: str, path: str, status: int, fragment: str
) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}
    body = body if path.startswith("/v2") else {"instances": ["ok"]}
    response = getattr(client, method)(path, **({"json": body} if method == "post" else {}))
    assert_clean_error(response, status, fragment)


def test_the_server_keeps_serving_after_all_of_it(client: TestClient) -> None:
    for body, _ in RAW_BODIES:
        client.post(NATIVE, content=body, headers=JSON)
    for body, _ in INSTANCE_CASES:
        client.post(NATIVE, json=body)
    response = client.post(NATIVE, json={"instances": ["still here"]})
    assert response.status_code == 200
    metrics = client.get("/metrics").text
    assert 'outcome="error"' not in metrics


V2_TEXT = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("post", f"/v1/models/{HUGE}:predict", 404),
        ("post", f"/v1/models/{HUGE}/versions/1:predict", 404),
        ("post", f"/v1/models/sentiment/versions/{HUGE}:predict", 400),
        ("post", f"/v1/models/sentiment/labels/{HUGE}:predict", 404),
        ("post", f"/v1/models/{HUGE}/labels/stable:predict", 404),
        ("get", f"/v1/models/{HUGE}", 404),
        ("get", f"/v1/models/{HUGE}/metadata", 404),
        ("get", f"/v1/models/sentiment/versions/{HUGE}", 400),
        ("post", f"/v2/models/{HUGE}/infer", 404),
        ("post", f"/v2/models/sentiment/versions/{HUGE}/infer", 400),
        ("get", f"/v2/models/{HUGE}", 404),
        ("get", f"/v2/models/{HUGE}/ready", 404),
        ("get", f"/v2/models/{HUGE}/versions/1/ready", 404),
    ],
)
def test_errors_never_reflect_an_unbounded_name(client: TestClient, method: str, path: str, status: int) -> None:
    body = V2_TEXT if path.startswith("/v2") else {"instances": ["ok"]}
    response = getattr(client, method)(path, **({"json": body} if method == "post" else {}))
    assert_clean_error(response, status, "(cut, 20000 characters)")


@pytest.fixture
def roomy_client(make_repository: Callable[..., Path]) -> Iterator[TestClient]:
    """The suite's limits, but room for a 64 kB body: long values must be cut by the errors, not the body limit."""
    settings = settings_for(make_repository(), **{**LIMITS, "max_body_bytes": 64 * 1024})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        (NATIVE, {"instances": ["ok"], HUGE: 1}, "body: unknown field(s) ['nnnn"),
        (NATIVE, {"instances": ["ok"], "parameters": {HUGE: 1}}, "parameters: unknown field(s) ['nnnn"),
        (NATIVE, {"instances": ["ok"], "parameters": {"attention": HUGE}}, "got 'nnnn"),
        (V2, {**V2_TEXT, HUGE: 1}, "body: unknown field(s) ['nnnn"),
        (V2, {**V2_TEXT, "parameters": {HUGE: 1}}, "unsupported parameter(s) ['nnnn"),
        (V2, {**V2_TEXT, "outputs": [{"name": HUGE}]}, "unknown output 'nnnn"),
        (V2, {"inputs": [{"name": HUGE, "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}, "got 'nnnn"),
    ],
)
def test_errors_quote_a_cut_prefix_of_long_values(
    roomy_client: TestClient, path: str, body: dict, fragment: str
) -> None:
    response = roomy_client.post(path, json=body)
    assert_clean_error(response, 400, fragment)
    assert "(cut, 20000 characters)" in response.json()["error"]


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"Content-Type": "text/" + HUGE}, "(got 'text/nnn"),
        ({**JSON, "Content-Encoding": HUGE}, "compressed request bodies ('nnnn"),
    ],
)
@pytest.mark.parametrize("path", [NATIVE, V2])
def test_errors_quote_a_cut_prefix_of_long_headers(client: TestClient, path: str, headers: dict, fragment: str) -> None:
    response = client.post(path, content=b"{}", headers=headers)
    assert_clean_error(response, 415, fragment)
    assert "(cut, 200" in response.json()["error"]


def test_a_wrong_datatype_is_named(client: TestClient) -> None:
    body = {"inputs": [{"name": "input_ids", "datatype": "FP16", "shape": [1, 2], "data": [1, 2]}]}
    assert_clean_error(
        client.post(V2, json=body), 400, "input 'input_ids'.datatype: expected INT32 or INT64, got 'FP16'"
    )
