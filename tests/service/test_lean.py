"""A version with a lean graph answers on it and opens its explaining graph only when a request needs maps; both give
the same probabilities; a version without one (every folder written before) serves as it always has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import settings_for
from tests.service.graphs import TinyGraph, reference, write_folder

TEXTS = ["the food was good", "slow service, cold food"]


def served(client: TestClient, name: str) -> object:
    return client.app.state.core.repository.get(name)  # type: ignore[attr-defined]


def test_answers_run_on_the_lean_graph_and_maps_open_the_explaining_one(tmp_path: Path) -> None:
    write_folder(tmp_path, TinyGraph(layout="BLHTT"), name="lean", lean=True)
    with TestClient(create_app(settings_for(tmp_path))) as client:
        model = served(client, "lean").folder.model  # type: ignore[attr-defined]
        assert model.lean is not None
        assert not model.explaining_loaded  # an idle worker holds one graph
        plain = client.post("/v1/models/lean:predict", json={"instances": TEXTS}).json()["predictions"]
        assert not model.explaining_loaded
        body = {"instances": TEXTS, "parameters": {"attention": "all"}}
        explained = client.post("/v1/models/lean:predict", json=body).json()["predictions"]
        assert model.explaining_loaded
    for quick, full in zip(plain, explained, strict=True):
        np.testing.assert_allclose(
            list(quick["probabilities"].values()), list(full["probabilities"].values()), atol=1e-6
        )
        np.testing.assert_allclose(quick["attention"], full["attention"], atol=1e-6)
        assert "self_attention" in full


def test_the_lean_graph_answers_as_the_model_does(tmp_path: Path) -> None:
    write_folder(tmp_path, TinyGraph(layout="BLHTT"), name="lean", lean=True)
    with TestClient(create_app(settings_for(tmp_path))) as client:
        rows = client.post("/v1/models/lean:predict", json={"instances": [[5, 6, 7], [9, 10]]}).json()["predictions"]
    for ids, row in zip([[5, 6, 7], [9, 10]], rows, strict=True):
        np.testing.assert_allclose(
            list(row["probabilities"].values()), reference(np.array(ids))["probabilities"], atol=1e-5
        )


def test_a_version_without_a_lean_graph_serves_as_before(tmp_path: Path) -> None:
    write_folder(tmp_path, TinyGraph(layout="BLHTT"), name="plain")
    with TestClient(create_app(settings_for(tmp_path))) as client:
        model = served(client, "plain").folder.model  # type: ignore[attr-defined]
        assert model.lean is None
        assert model.explaining_loaded
        body = {"instances": TEXTS, "parameters": {"attention": "all"}}
        assert client.post("/v1/models/plain:predict", json=body).status_code == 200
