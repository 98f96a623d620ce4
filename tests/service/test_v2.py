"""Open Inference Protocol v2 through TestClient: JSON and binary tensors, outputs, metadata, errors."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import settings_for

TEXTS = ["I love this car", "the seats are terrible and the ride is bumpy"]
INFER = "/v2/models/sentiment/infer"


@pytest.fixture
def client(make_repository: Callable[..., Path]) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(make_repository()))) as test_client:
        yield test_client


def infer(client: TestClient, body: dict, path: str = INFER) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def outputs_of(response: dict) -> dict[str, dict]:
    return {o["name"]: o for o in response["outputs"]}


def text_input(texts: list[str], shape: list[int] | None = None) -> dict:
    return {"name": "text", "datatype": "BYTES", "shape": shape or [len(texts)], "data": texts}


def test_text_infer_matches_the_native_api(client: TestClient) -> None:
    response = infer(client, {"id": "req-7", "inputs": [text_input(TEXTS)]})
    assert response["id"] == "req-7"
    assert response["model_name"] == "sentiment"
    assert response["model_version"] == "1"
    out = outputs_of(response)
    assert set(out) == {"label", "probabilities", "attention", "lengths"}
    native = client.post("/v1/models/sentiment:predict", json={"instances": TEXTS}).json()["predictions"]
    assert out["label"]["data"] == [p["label"] for p in native]
    probabilities = np.array(out["probabilities"]["data"]).reshape(out["probabilities"]["shape"])
    np.testing.assert_allclose(probabilities, [list(p["probabilities"].values()) for p in native], atol=1e-6)
    attention = np.array(out["attention"]["data"]).reshape(out["attention"]["shape"])
    lengths = out["lengths"]["data"]
    for row, length, prediction in zip(attention, lengths, native, strict=True):
        np.testing.assert_allclose(row[:length], prediction["attention"], atol=1e-6)
        assert np.all(row[length:] == 0)


def test_ids_with_mask_nested_data_and_an_outputs_filter(client: TestClient) -> None:
    body = {
        "inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [2, 4], "data": [[5, 6, 7, 8], [9, 10, 0, 0]]},
            {"name": "attention_mask", "datatype": "INT64", "shape": [2, 4], "data": [1, 1, 1, 1, 1, 1, 0, 0]},
        ],
        "outputs": [{"name": "self_attention"}, {"name": "rollout"}, {"name": "lengths"}],
    }
    out = outputs_of(infer(client, body))
    assert set(out) == {"self_attention", "rollout", "lengths"}
    assert out["lengths"]["data"] == [4, 2]
    assert out["self_attention"]["shape"][0] == 2
    assert out["self_attention"]["shape"][3:] == [4, 4]
    rollout = np.array(out["rollout"]["data"]).reshape(2, 4)
    np.testing.assert_allclose(rollout.sum(-1), 1, atol=1e-5)
    assert np.all(rollout[1, 2:] == 0)


def test_text_shape_batch_by_one_and_token_outputs(client: TestClient) -> None:
    body = {"inputs": [text_input(TEXTS, [2, 1])], "outputs": [{"name": "tokens"}, {"name": "offsets"}]}
    out = outputs_of(infer(client, body))
    tokens = np.array(out["tokens"]["data"]).reshape(out["tokens"]["shape"])
    offsets = np.array(out["offsets"]["data"]).reshape(out["offsets"]["shape"])
    assert tokens[0][:4].tolist() == ["i", "love", "this", "car"]
    assert tokens[0][4] == ""
    start, end = offsets[1][1]
    assert TEXTS[1][start:end] == "seats"


def test_classification_extension(client: TestClient) -> None:
    body = {"inputs": [text_input(TEXTS)], "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]}
    out = outputs_of(infer(client, body))["probabilities"]
    assert out["datatype"] == "BYTES"
    assert out["shape"] == [2, 2]
    score, index, label = out["data"][0].split(":")
    assert label in ("negative", "neutral", "positive")
    assert 0 < float(score) <= 1
    assert index.isdigit()


def binary_request(header: dict, *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), {"Inference-Header-Content-Length": str(len(head))}


def length_prefixed(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def parse_binary_response(response: object) -> tuple[dict, bytes]:
    length = int(response.headers["inference-header-content-length"])  # type: ignore[attr-defined]
    body = response.content  # type: ignore[attr-defined]
    return orjson.loads(body[:length]), body[length:]


def test_binary_inputs_and_outputs(client: TestClient) -> None:
    data = length_prefixed(TEXTS)
    header = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(data)}}],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_request(header, data)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    head, tail = parse_binary_response(response)
    offset, decoded = 0, {}
    for output in head["outputs"]:
        size = output["parameters"]["binary_data_size"]
        decoded[output["name"]] = tail[offset : offset + size]
        offset += size
    assert offset == len(tail)
    probabilities = np.frombuffer(decoded["probabilities"], dtype="<f4").reshape(2, 3)
    json_out = outputs_of(infer(client, {"inputs": [text_input(TEXTS)]}))
    np.testing.assert_allclose(probabilities.ravel(), json_out["probabilities"]["data"], atol=1e-7)
    assert np.frombuffer(decoded["lengths"], dtype="<i4").tolist() == json_out["lengths"]["data"]


def test_binary_ids(client: TestClient) -> None:
    ids = np.array([[5, 6, 7]], dtype="<i4")
    header = {
        "inputs": [{"name": "input_ids", "datatype": "INT32", "shape": [1, 3], "parameters": {"binary_data_size": 12}}]
    }
    body, headers = binary_request(header, ids.tobytes())
    response = client.post(INFER, content=body, headers={**headers, "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    expected = infer(
        client, {"inputs": [{"name": "input_ids", "datatype": "INT32", "shape": [1, 3], "data": [5, 6, 7]}]}
    )
    assert response.json() == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": []}, "inputs: expected a non-empty list"),
        ({"inputs": [text_input(TEXTS)], "outputs": [{"name": "secret"}]}, "unknown output 'secret'"),
        ({"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, "datatype: expected BYTES"),
        ({"inputs": [text_input(TEXTS, [3])]}, "2 elements of data, the shape [3] needs 3"),
        ({"inputs": [text_input(["a"]), text_input(["b"])]}, "given twice"),
        ({"inputs": [{"name": "weights", "datatype": "FP32", "shape": [1], "data": [1]}]}, "inputs[0].name"),
        ({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 2], "data": [1, True]}]}, "a boolean"),
        (
            {"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 1], "data": [-1]}]},
            "outside the vocabulary",
        ),
        ({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [2], "data": [1, 2]}]}, "[batch, sequence]"),
        ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [["a"]]}]}, "nested deeper"),
        ({"inputs": [text_input(TEXTS)], "parameters": {"sequence_id": 3}}, "unsupported parameter"),
        ({"inputs": [{**text_input(TEXTS), "parameters": {"shared_memory_region": "x"}}]}, "shared-memory"),
        ({"inputs": [text_input([""])]}, "input 'text'[0]: the text has no tokens"),
    ],
)
def test_bad_requests_name_what_and_where(client: TestClient, body: dict, message: str) -> None:
    response = client.post(INFER, json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_binary_size_mismatch_is_refused(client: TestClient) -> None:
    header = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 99}}]}
    body, headers = binary_request(header, length_prefixed(["hi"]))
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 400
    assert "binary_data_size" in response.json()["error"]


def test_metadata_and_readiness(client: TestClient) -> None:
    metadata = client.get("/v2/models/sentiment").json()
    assert metadata["name"] == "sentiment"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    inputs = {t["name"]: t for t in metadata["inputs"]}
    assert inputs["text"] == {"name": "text", "datatype": "BYTES", "shape": [-1]}
    assert inputs["input_ids"]["shape"] == [-1, -1]
    outputs = {t["name"]: t for t in metadata["outputs"]}
    assert outputs["probabilities"]["shape"] == [-1, 3]
    assert outputs["self_attention"]["shape"][1:3] == [2, 4]
    assert client.get("/v2/models/sentiment/versions/1").json()["versions"] == ["1"]
    assert client.get("/v2/models/sentiment/ready").json() == {"name": "sentiment", "ready": True}
    assert client.get("/v2/models/sentiment/versions/2/ready").status_code == 400
    assert client.get("/v2/models/unknown/ready").status_code == 404
    server = client.get("/v2").json()
    assert server["name"] == "attention-serve"
    assert "binary_tensor_data" in server["extensions"]
    assert "model_repository" not in server["extensions"]
    assert "model_configuration" in server["extensions"]


def test_kserve_clients_repeat_the_model_name_in_the_body(client: TestClient) -> None:
    body = {"id": "3f1c0f4e-8a35-4a3c-9f7c-1b2a4d5e6f70", "model_name": "sentiment", "inputs": [text_input(TEXTS)]}
    assert infer(client, body)["id"] == body["id"]
    response = client.post(INFER, json={**body, "model_name": "other"})
    assert response.status_code == 400
    assert "model_name" in response.json()["error"]


def test_parameters_attention_picks_the_attention_outputs(client: TestClient) -> None:
    body = {"inputs": [text_input(TEXTS)], "parameters": {"attention": ["rollout"]}}
    assert set(outputs_of(infer(client, body))) == {"label", "probabilities", "lengths", "rollout"}
    body["parameters"] = {"attention": "none"}
    assert set(outputs_of(infer(client, body))) == {"label", "probabilities", "lengths"}
    body["outputs"] = [{"name": "label"}]
    assert client.post(INFER, json=body).status_code == 400


def test_model_configuration_endpoints(client: TestClient) -> None:
    config = client.get("/v2/models/sentiment/config").json()
    assert config["name"] == "sentiment"
    assert config["max_batch_size"] == 256
    assert {t["name"]: t["dims"] for t in config["output"]}["probabilities"] == [3]
    assert {t["name"]: t for t in config["input"]}["text"]["reshape"] == {"shape": []}
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    assert client.get("/v2/models/sentiment/versions/1/config").json() == config
    assert client.get("/v2/models/sentiment/versions/4/config").status_code == 404
    assert client.get("/v2/models/absent/config").status_code == 404


def test_not_ready_is_a_documented_400(client: TestClient) -> None:
    response = client.get("/v2/models/sentiment/versions/7/ready")
    assert (response.status_code, response.json()) == (400, {"name": "sentiment", "ready": False})
    documented = client.get("/openapi.json").json()["paths"]["/v2/models/{name}/versions/{version}/ready"]["get"]
    schemas = documented["responses"]["400"]["content"]["application/json"]["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/ModelReadyResponse"} in schemas  # what schemathesis checks it against
