"""Versions, policies, hot reload and failed loads, through the app (scans are triggered directly)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.repository import ModelRepository
from tests.conftest import add_version, settings_for

BODY = {"instances": ["what a lovely day"]}


def repository_of(client: TestClient) -> ModelRepository:
    repository: ModelRepository = client.app.state.core.repository  # type: ignore[attr-defined]
    return repository


def states(client: TestClient) -> dict[str, str]:
    return {e["version"]: e["state"] for e in client.get("/v1/models/sentiment").json()["model_version_status"]}


def served_version(client: TestClient) -> str:
    response = client.post("/v1/models/sentiment:predict", json=BODY)
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"]


def test_new_version_takes_over_and_removal_falls_back(make_repository: Callable[..., Path]) -> None:
    root = make_repository((1,))
    with TestClient(create_app(settings_for(root))) as client:
        assert served_version(client) == "1"
        add_version(root, 2)
        client.portal.call(repository_of(client).poll)
        assert states(client) == {"2": "AVAILABLE", "1": "END"}
        assert served_version(client) == "2"
        assert client.post("/v1/models/sentiment/versions/1:predict", json=BODY).status_code == 404
        shutil.rmtree(root / "sentiment" / "2")
        client.portal.call(repository_of(client).poll)
        assert served_version(client) == "1"
        assert states(client) == {"1": "AVAILABLE"}


def test_hot_reload_happens_on_its_own(make_repository: Callable[..., Path]) -> None:
    root = make_repository((1,))
    with TestClient(create_app(settings_for(root, poll_interval_s=0.02))) as client:
        repository = repository_of(client)
        add_version(root, 2)
        seen = repository.scan_count
        for _ in range(1000):  # wait for two complete scans by the server's own poller (bounded)
            if repository.scan_count >= seen + 2:
                break
            time.sleep(0.01)
        assert served_version(client) == "2"


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (lambda folder: (folder / "model.onnx").write_bytes(b"corrupted"), "SHA-256"),
        (lambda folder: (folder / "model.json").write_text("{not json"), "model.json is unreadable"),
        (lambda folder: (folder / "tokenizer.json").unlink(), "tokenizer.json is missing"),
        (lambda folder: (folder / "tokenizer.json").write_text("{}"), "tokenizer.json does not match the SHA-256"),
    ],
)
def test_broken_version_is_refused_and_the_old_one_keeps_serving(
    make_repository: Callable[..., Path], breakage: Callable[[Path], object], reason: str
) -> None:
    root = make_repository((1,))
    with TestClient(create_app(settings_for(root))) as client:
        breakage(add_version(root, 2))
        client.portal.call(repository_of(client).poll)
        status = {e["version"]: e for e in client.get("/v1/models/sentiment").json()["model_version_status"]}
        assert status["2"]["state"] == "END"
        assert status["2"]["status"]["error_code"] != "OK"
        assert reason in status["2"]["status"]["error_message"]
        assert str(root) not in status["2"]["status"]["error_message"]
        assert status["1"]["state"] == "AVAILABLE"
        assert served_version(client) == "1"
        assert client.get("/v2/health/ready").status_code == 200


def test_mismatched_labels_are_refused(make_repository: Callable[..., Path]) -> None:
    root = make_repository((1,))
    add_version(root, 2, edit=lambda doc: doc.update(labels=["a", "b", "c", "d"]))
    with TestClient(create_app(settings_for(root))) as client:
        assert (
            "labels"
            in client.get("/v1/models/sentiment/versions/2").json()["model_version_status"][0]["status"][
                "error_message"
            ]
        )
        assert served_version(client) == "1"


def test_all_and_specific_version_policies(make_repository: Callable[..., Path]) -> None:
    root = make_repository((1, 2, 3))
    with TestClient(create_app(settings_for(root, version_policy="all"))) as client:
        assert states(client) == {"3": "AVAILABLE", "2": "AVAILABLE", "1": "AVAILABLE"}
    with TestClient(create_app(settings_for(root, version_policy="specific", specific_versions=[1, 2]))) as client:
        assert states(client) == {"2": "AVAILABLE", "1": "AVAILABLE"}
        assert served_version(client) == "2"
    with TestClient(create_app(settings_for(root, latest_versions=2))) as client:
        assert states(client) == {"3": "AVAILABLE", "2": "AVAILABLE"}


def test_not_ready_while_a_configured_model_is_missing(make_repository: Callable[..., Path]) -> None:
    root = make_repository((1,))
    with TestClient(create_app(settings_for(root, models=["sentiment", "absent"]))) as client:
        assert client.get("/v2/health/ready").status_code == 400
        assert served_version(client) == "1"
