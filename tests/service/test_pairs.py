"""Text pairs and segment ids through the service, on a tiny graph that takes segment ids (tests/service/graphs.py):
each pair's answer is the model's on exactly its sequence and segments, batched or alone, over native REST, v2 and
gRPC; offsets say which text each token came from; a model that reads one text refuses a pair."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import settings_for
from tests.service.graphs import TinyGraph, pair_tokenizer, reference, write_folder
from tests.service.grpc_helpers import grpc_app, outputs_of, rpc_error, set_parameter, text_request

PAIRS = [("the food was good", "the service was slow"), ("great", "not great at all, really"), ("ok", "ok")]
GRAPH = TinyGraph(segments="types", layout="BLHTT")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_folder(tmp_path, GRAPH, name="pairs")
    write_folder(tmp_path, TinyGraph(), name="single")
    return tmp_path


@pytest.fixture
def client(root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(root))) as client:
        yield client


def expected(first: str, second: str) -> dict[str, np.ndarray]:
    encoding = pair_tokenizer().encode(first, second)
    return reference(np.asarray(encoding.ids), np.asarray(encoding.type_ids))


def test_each_pair_is_answered_on_its_own_sequence_and_segments(client: TestClient) -> None:
    instances = [{"text": a, "text_pair": b} for a, b in PAIRS] + ["a single text"]
    body = {"instances": instances, "parameters": {"attention": "all"}}
    response = client.post("/v1/models/pairs:predict", json=body)
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    for (first, second), row in zip(PAIRS, rows, strict=False):
        answer = expected(first, second)
        np.testing.assert_allclose(list(row["probabilities"].values()), answer["probabilities"], atol=1e-5)
        np.testing.assert_allclose(row["attention"], answer["attention"], atol=1e-5)
        assert row["tokens"][0] == "[CLS]"
        assert row["tokens"].count("[SEP]") == 2
        sources = [offset[2] for offset in row["offsets"]]
        assert sources == [s if s is not None else -1 for s in pair_tokenizer().encode(first, second).sequence_ids]
        for token, (start, end, source) in zip(row["tokens"], row["offsets"], strict=True):
            if source >= 0:
                assert (first, second)[source][start:end].lower() == token.lower().removeprefix("##")
    single = np.asarray(pair_tokenizer().encode("a single text").ids)
    alone = reference(single, np.zeros_like(single))  # one text: every token in segment 0
    np.testing.assert_allclose(list(rows[-1]["probabilities"].values()), alone["probabilities"], atol=1e-5)
    assert {offset[2] for offset in rows[-1]["offsets"]} == {-1, 0}


def test_a_long_pair_is_cut_longer_text_first_when_asked(client: TestClient) -> None:
    long = " ".join(["good"] * 200)
    body = {"instances": [{"text": "short one", "text_pair": long}], "parameters": {"truncate": True}}
    (row,) = client.post("/v1/models/pairs:predict", json=body).json()["predictions"]
    sources = [offset[2] for offset in row["offsets"]]
    assert len(row["tokens"]) == 64  # the model's maximum
    assert sources.count(0) == 2  # the short text whole
    assert sources.count(1) == 64 - 3 - 2
    assert row["truncated"] is True
    refused = client.post("/v1/models/pairs:predict", json={"instances": [{"text": "a", "text_pair": long}]})
    assert refused.status_code == 400
    assert "ask for truncation" in refused.json()["error"]


def test_columns_and_the_v2_text_pair_input(client: TestClient) -> None:
    columns = client.post(
        "/v1/models/pairs:predict", json={"inputs": {"text": [p[0] for p in PAIRS], "text_pair": [p[1] for p in PAIRS]}}
    ).json()["outputs"]
    inputs = [
        {"name": "text", "datatype": "BYTES", "shape": [len(PAIRS)], "data": [p[0] for p in PAIRS]},
        {"name": "text_pair", "datatype": "BYTES", "shape": [len(PAIRS)], "data": [p[1] for p in PAIRS]},
    ]
    v2 = client.post("/v2/models/pairs/infer", json={"inputs": inputs, "outputs": [{"name": "probabilities"}]})
    assert v2.status_code == 200, v2.text
    probabilities = np.asarray(v2.json()["outputs"][0]["data"]).reshape(len(PAIRS), -1)
    for index, (first, second) in enumerate(PAIRS):
        np.testing.assert_allclose(probabilities[index], expected(first, second)["probabilities"], atol=1e-5)
        np.testing.assert_allclose(columns["probabilities"][index], probabilities[index], atol=1e-6)
    metadata = client.get("/v2/models/pairs").json()
    assert "text_pair" in [t["name"] for t in metadata["inputs"]]
    assert next(t for t in metadata["outputs"] if t["name"] == "offsets")["shape"] == [-1, -1, 3]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [{"text_pair": "b"}]}, "expected an object with exactly one of 'text' or 'input_ids'"),
        ({"instances": [{"text": "a", "text_pair": 3}]}, "instances[0].text_pair: expected a text string"),
        ({"inputs": {"text": ["a", "b"], "text_pair": ["c"]}}, "inputs.text_pair: 1 texts for 2 in inputs.text"),
        ({"inputs": {"text_pair": ["c"]}}, "expected exactly one of the columns"),
    ],
)
def test_malformed_pairs_are_400s(client: TestClient, body: object, message: str) -> None:
    response = client.post("/v1/models/pairs:predict", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_a_model_that_reads_one_text_refuses_a_pair_over_rest(client: TestClient) -> None:
    response = client.post("/v1/models/single:predict", json={"instances": [{"text": "a", "text_pair": "b"}]})
    assert response.status_code == 400
    assert "model 'single' reads one text per sequence; it takes no text_pair" in response.json()["error"]
    inputs = [
        {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]},
        {"name": "text_pair", "datatype": "BYTES", "shape": [1], "data": ["b"]},
    ]
    v2 = client.post("/v2/models/single/infer", json={"inputs": inputs})
    assert v2.status_code == 400
    assert "it takes no text_pair" in v2.json()["error"]


def test_pairs_over_grpc(root: Path) -> None:
    import grpc

    with grpc_app(root) as app:
        request = text_request([p[0] for p in PAIRS], model="pairs")
        pair = request.inputs.add(name="text_pair", datatype="BYTES", shape=[len(PAIRS)])
        del pair  # its data goes in raw_input_contents, in the inputs' order
        from tests.service.grpc_helpers import length_prefixed

        request.raw_input_contents.append(length_prefixed([p[1] for p in PAIRS]))
        set_parameter(request.parameters, "attention", "none")
        answer = outputs_of(app.stub.ModelInfer(request))
        probabilities = np.asarray(answer["probabilities"])
        for index, (first, second) in enumerate(PAIRS):
            np.testing.assert_allclose(probabilities[index], expected(first, second)["probabilities"], atol=1e-5)
        refused = text_request(["a"], model="single")
        refused.inputs.add(name="text_pair", datatype="BYTES", shape=[1])
        refused.raw_input_contents.append(length_prefixed(["b"]))
        error = rpc_error(app.stub.ModelInfer, refused)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "it takes no text_pair" in (error.details() or "")
