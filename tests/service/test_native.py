"""The native (TF Serving-shaped) REST API through TestClient, on the bundled model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import settings_for

TEXT = "I love how this self-driving car handles the highway!"


@pytest.fixture
def client(make_repository: Callable[..., Path]) -> Iterator[TestClient]:
    settings = settings_for(make_repository(), version_labels={"sentiment": {"stable": 1}})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def predict(client: TestClient, body: object, path: str = "/v1/models/sentiment:predict") -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_text_prediction_has_label_probabilities_tokens_offsets_and_attention(client: TestClient) -> None:
    row = predict(client, {"instances": [TEXT]})["predictions"][0]
    assert set(row["probabilities"]) == {"negative", "neutral", "positive"}
    assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
    assert len(row["attention"]) == len(row["tokens"]) == len(row["offsets"])
    assert abs(sum(row["attention"]) - 1) < 1e-5
    for token, (start, end) in zip(row["tokens"], row["offsets"], strict=True):
        assert TEXT[start:end].lower() == token.removeprefix("##")
    assert row["truncated"] is False


def test_every_instance_form_is_accepted(client: TestClient) -> None:
    ids = predict(client, {"instances": [TEXT]})["predictions"][0]
    body = {"instances": [TEXT, {"text": TEXT}, [5, 6, 7], {"input_ids": [5, 6, 7, 0], "attention_mask": [1, 1, 1, 0]}]}
    rows = predict(client, body)["predictions"]
    assert rows[0]["probabilities"] == rows[1]["probabilities"]
    np.testing.assert_allclose(list(rows[0]["probabilities"].values()), list(ids["probabilities"].values()), atol=1e-6)
    np.testing.assert_allclose(
        list(rows[2]["probabilities"].values()), list(rows[3]["probabilities"].values()), atol=1e-6
    )
    assert "tokens" not in rows[2]
    assert len(rows[3]["attention"]) == 3


def test_attention_parameter_chooses_the_outputs(client: TestClient) -> None:
    none = predict(client, {"instances": [TEXT], "parameters": {"attention": "none"}})["predictions"][0]
    assert "attention" not in none
    assert "self_attention" not in none
    full = predict(client, {"instances": [TEXT], "parameters": {"attention": "all"}})["predictions"][0]
    length = len(full["tokens"])
    matrix = np.array(full["self_attention"])
    assert matrix.shape[2:] == (length, length)
    np.testing.assert_allclose(matrix.sum(-1), 1.0, atol=1e-5)
    assert len(full["rollout"]) == length
    assert abs(sum(full["rollout"]) - 1) < 1e-5


def test_too_long_sequence_is_refused_unless_truncation_is_asked(client: TestClient) -> None:
    long_text = "good " * 500
    refused = client.post("/v1/models/sentiment:predict", json={"instances": [long_text]})
    assert refused.status_code == 400
    assert "instances[0]" in refused.json()["error"]
    assert "maximum" in refused.json()["error"]
    row = predict(client, {"instances": [long_text], "parameters": {"truncate": True}})["predictions"][0]
    assert row["truncated"] is True
    maximum = client.get("/v1/models/sentiment/metadata").json()["attention_serve"]["max_sequence_length"]
    assert len(row["attention"]) == len(row["tokens"]) == maximum


def test_columnar_format_answers_outputs(client: TestClient) -> None:
    outputs = predict(client, {"inputs": {"text": [TEXT, "bad"]}})["outputs"]
    rows = predict(client, {"instances": [TEXT, "bad"]})["predictions"]
    assert outputs["label"] == [r["label"] for r in rows]
    np.testing.assert_allclose(outputs["probabilities"][1], list(rows[1]["probabilities"].values()), atol=1e-6)
    assert len(outputs["attention"][1]) == len(rows[0]["attention"])  # zero-padded to the longest
    assert outputs["attention"][1][len(rows[1]["attention"]) :] == [0.0] * (
        len(rows[0]["attention"]) - len(rows[1]["attention"])
    )


def test_columnar_ids_with_a_mask_one_row_or_many(client: TestClient) -> None:
    one = predict(client, {"inputs": {"input_ids": [5, 6, 7, 0], "attention_mask": [1, 1, 1, 0]}})["outputs"]
    many = predict(client, {"inputs": {"input_ids": [[5, 6, 7, 0]], "attention_mask": [[1, 1, 1, 0]]}})["outputs"]
    assert one == many
    assert len(one["attention"][0]) == 3


def test_version_and_label_routes(client: TestClient) -> None:
    latest = predict(client, {"instances": [TEXT]})
    assert predict(client, {"instances": [TEXT]}, "/v1/models/sentiment/versions/1:predict") == latest
    assert predict(client, {"instances": [TEXT]}, "/v1/models/sentiment/labels/stable:predict") == latest
    assert client.post("/v1/models/sentiment/versions/7:predict", json={"instances": [TEXT]}).status_code == 404
    assert client.post("/v1/models/sentiment/labels/canary:predict", json={"instances": [TEXT]}).status_code == 404


def test_status_and_metadata_look_like_tf_serving(client: TestClient) -> None:
    status = client.get("/v1/models/sentiment").json()
    assert status == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert client.get("/v1/models/sentiment/versions/1").json() == status
    metadata = client.get("/v1/models/sentiment/metadata").json()
    assert metadata["model_spec"] == {"name": "sentiment", "signature_name": "", "version": "1"}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert {"text", "input_ids", "attention_mask"} == set(signature["inputs"])
    assert set(signature["outputs"]) == {
        "label",
        "probabilities",
        "attention",
        "lengths",
        "tokens",
        "offsets",
        "self_attention",
        "rollout",
        "occlusion",
    }
    assert metadata["attention_serve"]["providers"] == ["CPUExecutionProvider"]
    assert metadata["attention_serve"]["metrics"]["macro_f1"] > 0.7


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    predict(client, {"instances": [TEXT, TEXT]})
    text = client.get("/metrics").text
    assert (
        'attention_serve_requests_total{model="sentiment",outcome="success",protocol="native",version="1"} 1.0' in text
    )
    assert 'attention_serve_inference_count_total{model="sentiment",version="1"} 2.0' in text
    assert "attention_serve_batch_size_bucket" in text
    assert "attention_serve_queue_seconds_bucket" in text


def test_request_id_is_echoed(client: TestClient) -> None:
    response = client.post(
        "/v1/models/sentiment:predict", json={"instances": [TEXT]}, headers={"X-Request-ID": "abc-1"}
    )
    assert response.headers["x-request-id"] == "abc-1"
    assert response.headers["x-model-version"] == "1"
