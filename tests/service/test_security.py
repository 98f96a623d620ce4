"""Optional API key on inference, switchable docs, and a failing inference that fails only its own batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import add_version, settings_for

BODY = {"instances": ["hello there"]}


def test_api_key_guards_inference_only(make_repository: Callable[..., Path]) -> None:
    with TestClient(create_app(settings_for(make_repository(), api_key="inference-key"))) as client:
        denied = client.post("/v1/models/sentiment:predict", json=BODY)
        assert denied.status_code == 401
        assert denied.json() == {"error": "missing or invalid credentials"}
        assert client.post("/v1/models/sentiment:predict", json=BODY, headers={"X-API-Key": "wrong"}).status_code == 401
        bearer = {"Authorization": "Bearer inference-key"}
        assert client.post("/v1/models/sentiment:predict", json=BODY, headers=bearer).status_code == 200
        assert (
            client.post("/v1/models/sentiment:predict", json=BODY, headers={"X-API-Key": "inference-key"}).status_code
            == 200
        )
        v2 = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}
        assert client.post("/v2/models/sentiment/infer", json=v2).status_code == 401
        assert client.post("/v2/models/sentiment/infer", json=v2, headers=bearer).status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("enabled", [True, False])
def test_interactive_docs_can_be_turned_off(make_repository: Callable[..., Path], enabled: bool) -> None:
    with TestClient(create_app(settings_for(make_repository(), docs_enabled=enabled))) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == (200 if enabled else 404)


def test_failed_inference_fails_its_batch_only_and_leaks_nothing(make_repository: Callable[..., Path]) -> None:
    # A mismatched version: model.json claims a larger vocabulary than the graph's embedding has, so an id
    # past the real table passes validation and ONNX Runtime fails inside the graph.
    root = make_repository(())
    add_version(root, 1, edit=lambda doc: doc.update(vocab_size=100_000))
    with TestClient(create_app(settings_for(root))) as client:
        failed = client.post("/v1/models/sentiment:predict", json={"instances": [[5, 90_000]]})
        assert failed.status_code == 500
        assert failed.json() == {"error": "inference failed for the batch holding this request"}
        assert client.post("/v1/models/sentiment:predict", json={"instances": [[5, 6]]}).status_code == 200
        assert client.post("/v1/models/sentiment:predict", json=BODY).status_code == 200
        metrics = client.get("/metrics").text
        assert 'attention_serve_failed_batches_total{model="sentiment",version="1"} 1.0' in metrics
