"""Triton's own HTTP client, unmodified, against the real server (binary tensors by default)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import RunningServer

pytestmark = pytest.mark.e2e
TEXTS = ["I love how smooth the ride was", "worst commute ever, never again"]


@pytest.fixture
def client(bundled_server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(bundled_server.url.removeprefix("http://"))
    yield client
    client.close()


def text_input(binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array(TEXTS, dtype=object), binary_data=binary)
    return tensor


def native(server: RunningServer) -> list[dict]:
    response = httpx.post(f"{server.url}/v1/models/sentiment:predict", json={"instances": TEXTS}, timeout=10)
    predictions: list[dict] = response.json()["predictions"]
    return predictions


def test_health_metadata_and_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("sentiment")
    assert client.is_model_ready("sentiment", "1")
    assert not client.is_model_ready("sentiment", "9")
    assert client.get_server_metadata()["name"] == "attention-serve"
    metadata = client.get_model_metadata("sentiment")
    assert [t["name"] for t in metadata["inputs"]] == ["text", "input_ids", "attention_mask"]
    assert {"label", "probabilities", "attention"} <= {t["name"] for t in metadata["outputs"]}
    config = client.get_model_config("sentiment")  # Triton's model configuration extension
    assert (config["name"], config["platform"], config["max_batch_size"]) == ("sentiment", "onnxruntime_onnx", 256)
    assert {t["name"]: t["dims"] for t in config["output"]}["probabilities"] == [3]


@pytest.mark.parametrize("binary", [True, False])
def test_text_infer_matches_native_rest(
    client: triton.InferenceServerClient, bundled_server: RunningServer, binary: bool
) -> None:
    result = client.infer("sentiment", [text_input(binary)], request_id="abc")
    assert result.get_response()["id"] == "abc"
    expected = native(bundled_server)
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert labels == [p["label"] for p in expected]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, [list(p["probabilities"].values()) for p in expected], atol=1e-6)
    attention, lengths = result.as_numpy("attention"), result.as_numpy("lengths")
    for row, length, prediction in zip(attention, lengths, expected, strict=True):
        np.testing.assert_allclose(row[:length], prediction["attention"], atol=1e-6)


def test_ids_infer_with_an_outputs_filter(client: triton.InferenceServerClient) -> None:
    ids = triton.InferInput("input_ids", [2, 4], "INT32")
    ids.set_data_from_numpy(np.array([[5, 6, 7, 8], [9, 10, 0, 0]], dtype=np.int32))
    mask = triton.InferInput("attention_mask", [2, 4], "INT32")
    mask.set_data_from_numpy(np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=np.int32))
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=False),
        triton.InferRequestedOutput("self_attention"),
        triton.InferRequestedOutput("rollout"),
    ]
    result = client.infer("sentiment", [ids, mask], outputs=outputs, model_version="1")
    assert {o["name"] for o in result.get_response()["outputs"]} == {"probabilities", "self_attention", "rollout"}
    assert result.as_numpy("label") is None
    assert result.as_numpy("self_attention").shape[0] == 2
    np.testing.assert_allclose(result.as_numpy("rollout").sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("probabilities").sum(-1), 1, atol=1e-5)


def test_errors_surface_as_inference_server_exceptions(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="unknown output 'nope'"):
        client.infer("sentiment", [text_input()], outputs=[triton.InferRequestedOutput("nope")])
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("absent", [text_input()])
