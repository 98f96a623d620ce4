"""Triton's own gRPC client, unmodified (sync and asyncio), against the real server; answers agree with the native
REST API to 1e-6."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from tests.conftest import ROOT
from tests.e2e.conftest import RunningServer, start_server
from tests.e2e.test_tritonclient import TEXTS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(ROOT / "models", tmp_path_factory.mktemp("triton-grpc") / "server.log")
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.grpc_address)
    yield client
    client.close()


def native(server: RunningServer, instances: list) -> list[dict]:
    response = httpx.post(f"{server.url}/v1/models/sentiment:predict", json={"instances": instances}, timeout=10)
    predictions: list[dict] = response.json()["predictions"]
    return predictions


def text_input(module: object = triton) -> triton.InferInput:
    tensor = module.InferInput("text", [len(TEXTS)], "BYTES")  # type: ignore[attr-defined]
    tensor.set_data_from_numpy(np.array(TEXTS, dtype=object))
    return tensor


def assert_matches(result: triton.InferResult, expected: list[dict]) -> None:
    assert [v.decode() for v in result.as_numpy("label")] == [p["label"] for p in expected]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, [list(p["probabilities"].values()) for p in expected], atol=1e-6)
    for row, length, prediction in zip(result.as_numpy("attention"), result.as_numpy("lengths"), expected, strict=True):
        np.testing.assert_allclose(row[:length], prediction["attention"], atol=1e-6)


def test_health_metadata_configuration_and_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("sentiment")
    assert client.is_model_ready("sentiment", "1")
    assert not client.is_model_ready("sentiment", "9")
    assert client.get_server_metadata().name == "attention-serve"
    metadata = client.get_model_metadata("sentiment", as_json=True)
    assert [t["name"] for t in metadata["inputs"]] == ["text", "input_ids", "attention_mask"]
    config = client.get_model_config("sentiment").config
    assert (config.name, config.platform, config.max_batch_size) == ("sentiment", "onnxruntime_onnx", 256)


def test_text_infer_matches_native_rest(client: triton.InferenceServerClient, server: RunningServer) -> None:
    result = client.infer("sentiment", [text_input()], request_id="abc", client_timeout=10)
    assert result.get_response().id == "abc"
    assert_matches(result, native(server, TEXTS))


def test_ids_infer_with_an_outputs_filter(client: triton.InferenceServerClient, server: RunningServer) -> None:
    ids = triton.InferInput("input_ids", [2, 4], "INT64")
    ids.set_data_from_numpy(np.array([[5, 6, 7, 8], [9, 10, 0, 0]], dtype=np.int64))
    mask = triton.InferInput("attention_mask", [2, 4], "INT64")
    mask.set_data_from_numpy(np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=np.int64))
    outputs = [triton.InferRequestedOutput("probabilities"), triton.InferRequestedOutput("rollout")]
    result = client.infer("sentiment", [ids, mask], outputs=outputs, model_version="1")
    assert {o.name for o in result.get_response().outputs} == {"probabilities", "rollout"}
    assert result.as_numpy("label") is None
    expected = native(server, [[5, 6, 7, 8], [9, 10]])
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), [list(p["probabilities"].values()) for p in expected], atol=1e-6
    )
    np.testing.assert_allclose(result.as_numpy("rollout").sum(-1), 1, atol=1e-5)


def test_errors_surface_with_their_grpc_codes(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="unknown output 'nope'") as bad:
        client.infer("sentiment", [text_input()], outputs=[triton.InferRequestedOutput("nope")])
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="unknown model") as absent:
        client.infer("absent", [text_input()])
    assert absent.value.status() == "StatusCode.NOT_FOUND"


def test_the_asyncio_client(server: RunningServer) -> None:
    async def run() -> tuple[bool, list[triton.InferResult]]:
        client = triton_aio.InferenceServerClient(server.grpc_address)
        try:
            ready = await client.is_model_ready("sentiment")
            results = await asyncio.gather(*(client.infer("sentiment", [text_input(triton_aio)]) for _ in range(8)))
        finally:
            await client.close()
        return ready, list(results)

    ready, results = asyncio.run(run())
    assert ready
    expected = native(server, TEXTS)
    for result in results:
        assert_matches(result, expected)
