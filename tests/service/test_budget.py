"""Explanations are bounded: a request whose answer would hold more attention values than the budget is a 400 that
says the size, the limit and how to ask for less — over native REST, v2 and gRPC, before any work; ``layers`` and
``heads`` return exactly the maps they name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import settings_for
from tests.service.grpc_helpers import grpc_app, rpc_error, set_parameter, text_request

LONG = " ".join(["good food"] * 40)  # 80 tokens on the bundled model: 2 layers x 4 heads x 80² = 51,200 values
LIMIT = 20_000


@pytest.fixture
def root(make_repository: Callable[..., Path]) -> Path:
    return make_repository()


@pytest.fixture
def client(root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(root, max_explanation_values=LIMIT))) as client:
        yield client


def batches_run(client: TestClient) -> float:
    registry = client.app.state.core.metrics.registry  # type: ignore[attr-defined]
    return float(
        registry.get_sample_value("attention_serve_batch_size_count", {"model": "sentiment", "version": "1"}) or 0
    )


def test_an_answer_over_the_budget_is_refused_before_any_work(client: TestClient) -> None:
    before = batches_run(client)
    response = client.post(
        "/v1/models/sentiment:predict", json={"instances": [LONG], "parameters": {"attention": "self_attention"}}
    )
    assert response.status_code == 400
    message = response.json()["error"]
    assert "would hold 51,200 attention values" in message
    assert "2 layers x 4 heads" in message
    assert "limit of 20,000 per request" in message
    assert "parameters.layers" in message
    assert batches_run(client) == before  # nothing ran
    one_layer = {"instances": [LONG], "parameters": {"attention": "self_attention", "layers": [-1], "heads": [0, 1]}}
    assert client.post("/v1/models/sentiment:predict", json=one_layer).status_code == 200  # 2 x 80² fits


def test_layers_and_heads_return_exactly_those_maps(client: TestClient) -> None:
    text = "the food was good but the service was slow"
    full = client.post(
        "/v1/models/sentiment:predict", json={"instances": [text], "parameters": {"attention": "all"}}
    ).json()["predictions"][0]
    chosen = client.post(
        "/v1/models/sentiment:predict",
        json={"instances": [text], "parameters": {"attention": "all", "layers": [-1], "heads": "3,0"}},
    ).json()["predictions"][0]
    maps = np.asarray(full["self_attention"])
    np.testing.assert_allclose(chosen["self_attention"], maps[[1]][:, [3, 0]], atol=1e-7)
    np.testing.assert_allclose(chosen["rollout"], full["rollout"], atol=1e-7)  # rollout still reads every map


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"attention": "self_attention", "layers": [2]}, "parameters.layers: index 2 is out of range; the model has 2"),
        ({"attention": "self_attention", "heads": [0, 0]}, "parameters.heads: an index is named twice"),
        ({"attention": "self_attention", "layers": []}, "parameters.layers: name at least one index"),
        ({"attention": "self_attention", "layers": ["x"]}, "parameters.layers: expected integer indices"),
        ({"attention": "rollout", "layers": [0]}, "choose self_attention maps: ask for self_attention too"),
    ],
)
def test_bad_choices_are_400s(client: TestClient, parameters: dict[str, object], message: str) -> None:
    response = client.post("/v1/models/sentiment:predict", json={"instances": ["good"], "parameters": parameters})
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_v2_has_the_same_budget_and_choice(client: TestClient) -> None:
    text = {"name": "text", "datatype": "BYTES", "shape": [1], "data": [LONG]}
    over = client.post("/v2/models/sentiment/infer", json={"inputs": [text], "parameters": {"attention": "all"}})
    assert over.status_code == 400
    assert "more than the limit of 20,000 per request" in over.json()["error"]
    body = {"inputs": [text], "parameters": {"attention": "self_attention", "layers": "0", "heads": 1}}
    answer = client.post("/v2/models/sentiment/infer", json=body).json()
    shape = next(o["shape"] for o in answer["outputs"] if o["name"] == "self_attention")
    assert shape == [1, 1, 1, 80, 80]


def test_grpc_has_the_same_budget_and_choice(root: Path) -> None:
    with grpc_app(root, max_explanation_values=LIMIT) as app:
        request = text_request([LONG])
        set_parameter(request.parameters, "attention", "all")
        error = rpc_error(app.stub.ModelInfer, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "more than the limit of 20,000 per request" in (error.details() or "")
        set_parameter(request.parameters, "attention", "self_attention")
        set_parameter(request.parameters, "layers", "-1")
        set_parameter(request.parameters, "heads", 2)
        response = app.stub.ModelInfer(request)
        shape = next(list(o.shape) for o in response.outputs if o.name == "self_attention")
        assert shape == [1, 1, 1, 80, 80]
