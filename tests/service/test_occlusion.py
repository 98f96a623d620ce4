"""Occlusion attributions through the service: the model's own answers on each text without each token, exactly
(≤ 1e-5, batched or one by one), signed toward the class; bounded like every request; never starving ordinary ones."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tokenizers import Tokenizer

from service.app import create_app
from tests.conftest import BUNDLED, settings_for
from tests.service.graphs import TinyGraph, write_bag_of_words, write_folder

SENTENCE = (
    "The crew was wonderful but the delay was terrible"  # the, crew, was, wonderful, but, the, delay, was, terrible
)
NEGATIVE, POSITIVE = 0, 2
WONDERFUL, TERRIBLE, UNKNOWN = 7826, 7319, 1


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_bag_of_words(tmp_path, {WONDERFUL: (POSITIVE, 3.0), TERRIBLE: (NEGATIVE, 5.0)})
    write_folder(tmp_path, TinyGraph(layout="BLHTT"), name="tiny")
    return tmp_path


@pytest.fixture
def client(root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(root, max_occlusion_tokens=40, max_instances=64))) as client:
        yield client


def explain(client: TestClient, model: str, instances: list[object], **parameters: object) -> list[dict]:
    body = {"instances": instances, "parameters": {"explain": "occlusion", **parameters}}
    response = client.post(f"/v1/models/{model}:predict", json=body)
    assert response.status_code == 200, response.text
    rows: list[dict] = response.json()["predictions"]
    return rows


def probabilities(client: TestClient, model: str, ids: list[int]) -> np.ndarray:
    (row,) = client.post(f"/v1/models/{model}:predict", json={"instances": [ids]}).json()["predictions"]
    return np.array(list(row["probabilities"].values()))


def test_the_word_that_carries_the_class_pushes_toward_it_and_the_contrast_against(client: TestClient) -> None:
    (row,) = explain(client, "bag", [SENTENCE])
    assert row["label"] == "negative"
    values = dict(zip(row["tokens"], row["occlusion"], strict=False))
    assert max(row["occlusion"]) == values["terrible"] > 0.1  # the word the answer rests on
    assert values["wonderful"] < 0  # the contrasting word worked against it
    assert row["occlusion"][row["tokens"].index("wonderful")] == min(row["occlusion"])


@pytest.mark.parametrize("model", ["bag", "tiny"])
def test_occlusion_equals_the_model_on_each_text_without_each_token(client: TestClient, model: str) -> None:
    texts = [SENTENCE, "slow service, cold food", "good"]
    rows = explain(client, model, texts)
    for text, row in zip(texts, rows, strict=True):
        full = np.array(list(row["probabilities"].values()))
        target = int(np.argmax(full))
        tokens_ids = _ids(client, model, text)
        assert len(row["occlusion"]) == len(row["tokens"]) == len(tokens_ids)
        for position in range(len(tokens_ids)):
            without = tokens_ids[:position] + tokens_ids[position + 1 :] or [UNKNOWN]  # nothing left: replaced
            expected = full[target] - probabilities(client, model, without)[target]
            assert row["occlusion"][position] == pytest.approx(expected, abs=1e-5)


def _ids(client: TestClient, model: str, text: str) -> list[int]:
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]
    body = {"inputs": inputs, "outputs": [{"name": "tokens"}, {"name": "lengths"}]}
    answer = client.post(f"/v2/models/{model}/infer", json=body).json()
    tokens = next(o["data"] for o in answer["outputs"] if o["name"] == "tokens")
    vocab = Tokenizer.from_file(str(BUNDLED / "tokenizer.json"))
    return [int(vocab.token_to_id(t)) for t in tokens]


def test_a_target_class_and_a_window(client: TestClient) -> None:
    (toward_positive,) = explain(client, "bag", [SENTENCE], target="positive")
    values = dict(zip(toward_positive["tokens"], toward_positive["occlusion"], strict=False))
    assert values["wonderful"] > 0  # it pushed toward "positive"
    assert values["terrible"] < 0
    (windowed,) = explain(client, "bag", [SENTENCE], occlusion_window=3)
    assert windowed["occlusion"][0] == windowed["occlusion"][1] == windowed["occlusion"][2]  # one window of 3
    assert len(set(windowed["occlusion"])) <= 3


def test_v2_and_kserves_explain_verb_answer_the_same(client: TestClient) -> None:
    (native,) = explain(client, "bag", [SENTENCE])
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [SENTENCE]}]
    v2 = client.post("/v2/models/bag/infer", json={"inputs": inputs, "parameters": {"explain": "occlusion"}}).json()
    output = next(o for o in v2["outputs"] if o["name"] == "occlusion")
    assert output["shape"] == [1, 9]
    np.testing.assert_allclose(output["data"], native["occlusion"], atol=1e-7)
    verb = client.post("/v1/models/bag:explain", json={"instances": [SENTENCE]}).json()["predictions"][0]
    np.testing.assert_allclose(verb["occlusion"], native["occlusion"], atol=1e-7)
    versioned = client.post("/v1/models/bag/versions/1:explain", json={"instances": [SENTENCE]})
    assert versioned.status_code == 200


@pytest.mark.parametrize(
    ("instances", "parameters", "message"),
    [
        ([" ".join(["good"] * 50)], {}, "occlusion would run 50 variants of this text, more than the limit of 40"),
        ([" ".join(["good"] * 30)] * 3, {}, "93 in all, more than the limit of 64 per request"),
        ([SENTENCE], {"target": "happy"}, "parameters.target: expected one of the labels"),
        ([SENTENCE], {"occlusion_window": 0}, "parameters.occlusion_window: expected a number of tokens"),
        ([SENTENCE], {"explain": "shap"}, "parameters.explain: expected one of ['occlusion']"),
    ],
)
def test_limits_and_bad_parameters_are_400s(
    client: TestClient, instances: list[str], parameters: dict[str, object], message: str
) -> None:
    body = {"instances": instances, "parameters": {"explain": "occlusion", **parameters}}
    response = client.post("/v1/models/bag:predict", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_an_occlusion_never_holds_ordinary_requests_back(root: Path) -> None:
    """An occlusion of 30 tokens is 30 variants; ordinary requests that arrive while they wait run in the very next
    batch, and the variants fill the room they leave."""
    settings = settings_for(root, max_batch_size=4, batches_in_flight=1, lone_batch_inline=False)
    with TestClient(create_app(settings)) as client:
        batcher = client.app.state.core.repository.get("bag").batcher  # type: ignore[attr-defined]
        run, gate, batches = batcher._run, threading.Event(), []
        ok = _ids(client, "bag", "ok")[0]

        def held(ids: np.ndarray, mask: np.ndarray, outputs: object, segments: object) -> dict[str, np.ndarray]:
            batches.append(ids[:, 0].tolist())
            if len(batches) == 1:
                gate.wait(10)
            return run(ids, mask, outputs, segments)

        batcher._run = held
        answers: list[object] = []

        def ordinary() -> None:
            answers.append(client.post("/v1/models/bag:predict", json={"instances": ["ok"]}).status_code)

        long = threading.Thread(target=lambda: answers.append(explain(client, "bag", [" ".join(["good"] * 30)])))
        long.start()
        _until(lambda: bool(batches))  # the first batch (the text and 3 variants) is held
        others = [threading.Thread(target=ordinary) for _ in range(3)]
        for thread in others:
            thread.start()
        _until(lambda: batcher.depth == 27 + 3)
        gate.set()
        for thread in [long, *others]:
            thread.join(30)
    assert batches[1].count(ok) == 3  # the ordinary requests went first...
    assert len(batches[1]) == 4  # ...and one variant filled the room they left
    assert answers.count(200) == 3


def _until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        threading.Event().wait(0.005)
    raise AssertionError("the condition never held")
