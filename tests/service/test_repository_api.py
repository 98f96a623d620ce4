"""The v2 model repository extension: present only with an admin token, token checked, names only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import add_version, settings_for

TOKEN = "s3cret-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin_client(make_repository: Callable[..., Path]) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(make_repository(), admin_token=TOKEN))) as client:
        yield client


def test_control_endpoints_do_not_exist_without_a_token(make_repository: Callable[..., Path]) -> None:
    with TestClient(create_app(settings_for(make_repository()))) as client:
        assert client.post("/v2/repository/index").status_code == 404
        assert client.post("/v2/repository/models/sentiment/unload").status_code == 404
        assert "/v2/repository/index" not in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cret-admin-toke"}])
def test_wrong_or_missing_token_is_refused(admin_client: TestClient, headers: dict[str, str]) -> None:
    response = admin_client.post("/v2/repository/models/sentiment/unload", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert admin_client.post("/v1/models/sentiment:predict", json={"instances": ["hi"]}).status_code == 200


def test_index_unload_and_load(admin_client: TestClient) -> None:
    index = admin_client.post("/v2/repository/index", headers=ADMIN).json()
    assert index == [{"name": "sentiment", "version": "1", "state": "READY", "reason": ""}]
    assert admin_client.post("/v2/repository/models/sentiment/unload", headers=ADMIN).status_code == 200
    assert admin_client.get("/v2/models/sentiment/ready").status_code == 400
    refused = admin_client.post("/v1/models/sentiment:predict", json={"instances": ["hi"]})
    assert refused.status_code == 404  # not a 503: waiting will not bring it back, a load will
    assert refused.json()["error"] == "model 'sentiment' has no serving version (version 1 end)"
    assert admin_client.post("/v2/repository/index", headers=ADMIN, json={"ready": True}).json() == []
    assert admin_client.get("/v2/health/ready").status_code == 200  # an unloaded model is not expected
    assert admin_client.post("/v2/repository/models/sentiment/load", headers=ADMIN, json={}).status_code == 200
    assert admin_client.post("/v1/models/sentiment:predict", json={"instances": ["hi"]}).status_code == 200


@pytest.mark.parametrize(
    ("name", "body", "status"),
    [
        ("sentiment", {"parameters": {"config": "{}"}}, 400),
        ("sentiment", {"parameters": {"file:1/model.onnx": "AAAA"}}, 400),
        (".hidden", {}, 400),
        ("a%2F..%2Fb", {}, 404),  # the router never matches an encoded slash
        ("absent", {}, 404),
    ],
)
def test_load_takes_only_names_of_models_in_the_repository(
    admin_client: TestClient, name: str, body: dict, status: int
) -> None:
    response = admin_client.post(f"/v2/repository/models/{name}/load", headers=ADMIN, json=body)
    assert response.status_code == status
    assert "error" in response.json()


def test_loading_a_model_that_cannot_load_says_why_without_asking_for_a_retry(
    make_repository: Callable[..., Path],
) -> None:
    root = make_repository()
    add_version(root, 1, name="broken", edit=lambda document: document.update(labels=["only", "two"]))
    with TestClient(create_app(settings_for(root, admin_token=TOKEN))) as client:
        response = client.post("/v2/repository/models/broken/load", headers=ADMIN)
        assert response.status_code == 400, response.text
        assert "retry-after" not in response.headers
        assert response.json()["error"] == (
            "model 'broken' failed to load (version 1: the graph has 3 classes, model.json 2 labels)"
        )
        predict = client.post("/v1/models/broken:predict", json={"instances": ["hi"]})
        assert predict.status_code == 404
        assert "has no serving version (version 1 failed)" in predict.json()["error"]
