"""Pretrained-transformer classifiers (tests/model_export/hub_models.py), imported with no more than ``--labels`` and
served by the real server: the probabilities from raw text (single texts and pairs, batched with mixed lengths)
equal the original's own ``predict`` on the same strings; attention is every layer's, named by index, read from
[CLS]; a pair sent to a model that reads one text is a 400 over every protocol; the page renders one of them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from playwright.sync_api import Page, expect
from tritonclient.utils import InferenceServerException

from tests.conftest import BUNDLED
from tests.e2e.conftest import RunningServer, predict, probabilities, start_server
from tests.model_export.hub_models import KINDS, PAIRS, TEXTS, HubModel

pytestmark = [pytest.mark.e2e, pytest.mark.export]
PARITY = 1e-4


@pytest.fixture(scope="module")
def server(hub_models: dict[str, HubModel], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = hub_models["bert"].folder.parents[1]
    shutil.copytree(BUNDLED, repository / "sentiment" / "1", dirs_exist_ok=True)  # a model that reads one text
    running = start_server(repository, tmp_path_factory.mktemp("hub") / "server.log")
    yield running
    running.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_served_probabilities_equal_the_originals_predict_on_raw_strings(
    server: RunningServer, hub_models: dict[str, HubModel], kind: str
) -> None:
    model = hub_models[kind]
    texts = predict(server, kind, list(TEXTS))  # one request: one batch of several lengths
    assert len({len(row["tokens"]) for row in texts}) > 1
    np.testing.assert_allclose(probabilities(texts), model.texts, atol=PARITY)
    pairs = predict(server, kind, [{"text": a, "text_pair": b} for a, b in PAIRS])
    np.testing.assert_allclose(probabilities(pairs), model.pairs, atol=PARITY)
    (alone,) = predict(server, kind, [{"text": PAIRS[0][0], "text_pair": PAIRS[0][1]}])
    np.testing.assert_allclose(probabilities([alone]), probabilities(pairs[:1]), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_is_every_layers_named_by_index_and_read_from_cls(
    server: RunningServer, hub_models: dict[str, HubModel], kind: str
) -> None:
    (row,) = predict(server, kind, [{"text": PAIRS[2][0], "text_pair": PAIRS[2][1]}])
    length = len(row["tokens"])
    matrices = np.asarray(row["self_attention"])
    assert matrices.shape == (hub_models[kind].layers, 2, length, length)
    np.testing.assert_allclose(matrices.sum(-1), 1.0, atol=1e-4)
    # [CLS]'s row of the last layer, averaged over the heads: what the classifier read
    np.testing.assert_allclose(row["attention"], matrices[-1].mean(axis=0)[0], atol=1e-5)
    assert sum(row["rollout"]) == pytest.approx(1.0, abs=1e-5)
    sources = [offset[2] for offset in row["offsets"]]
    assert (sources[0], sources[-1]) == (-1, -1)  # specials
    assert {0, 1} <= set(sources)  # tokens of both texts, each saying which
    for token, (start, end, source) in zip(row["tokens"], row["offsets"], strict=True):
        if source >= 0:
            assert 0 <= start <= end <= len(PAIRS[2][source]), token
    described = httpx.get(f"{server.url}/v2/models/{kind}", timeout=10).json()["attention_serve"]["signature"]
    assert described["attention_layers"] == ["layer 0", "layer 1"]
    assert described["attention_source"] == "cls"
    assert described["pairs"] is True


def test_a_pair_sent_to_a_model_that_reads_one_text_is_a_400_over_every_protocol(server: RunningServer) -> None:
    native = httpx.post(
        f"{server.url}/v1/models/sentiment:predict", json={"instances": [{"text": "a", "text_pair": "b"}]}, timeout=10
    )
    assert native.status_code == 400
    assert "reads one text per sequence; it takes no text_pair" in native.json()["error"]
    inputs = [
        {"name": name, "datatype": "BYTES", "shape": [1], "data": [value]}
        for name, value in (("text", "a"), ("text_pair", "b"))
    ]
    v2 = httpx.post(f"{server.url}/v2/models/sentiment/infer", json={"inputs": inputs}, timeout=10)
    assert v2.status_code == 400
    assert "it takes no text_pair" in v2.json()["error"]
    client = triton.InferenceServerClient(server.grpc_address)
    tensors = []
    for name in ("text", "text_pair"):
        tensor = triton.InferInput(name, [1], "BYTES")
        tensor.set_data_from_numpy(np.array(["a"], dtype=object))
        tensors.append(tensor)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("sentiment", tensors)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "it takes no text_pair" in raised.value.message()
    offsets = triton.InferRequestedOutput("offsets")
    answer = client.infer("bert", tensors, outputs=[triton.InferRequestedOutput("probabilities"), offsets])
    assert answer.as_numpy("probabilities").shape == (1, 3)  # a pair model takes the same request
    assert answer.as_numpy("offsets").shape[-1] == 3  # start, end, and which text


def test_the_page_renders_a_pretrained_model(page: Page, console: list[str], server: RunningServer) -> None:
    text = TEXTS[2]
    (expected,) = predict(server, "bert", [text])
    page.select_option("#model", "bert")
    page.fill("#text", text)
    page.click("#submit")
    expect(page.locator("#answered-by")).to_contain_text("bert · version 1")
    tokens = page.locator("#sequences .token")
    expect(tokens).to_have_count(len(expected["tokens"]))
    assert tokens.all_text_contents()[0] == "[CLS]"
    expect(page.locator("#layer option")).to_have_count(2)
    assert page.locator("#layer option").all_text_contents()[0].endswith("· layer 0")
    expect(page.locator("#heatmap rect[data-row]")).to_have_count(len(expected["tokens"]) ** 2)
    weights = tokens.evaluate_all("spans => spans.map(s => +s.dataset.weight)")
    assert weights == pytest.approx(expected["rollout"], abs=1e-6)
    assert console == []


def test_the_import_recorded_no_machine_path(hub_models: dict[str, HubModel]) -> None:
    for kind in KINDS:
        document = json.loads((hub_models[kind].folder / "model.json").read_text())
        assert "/" not in json.dumps(document["source"]["options"]), kind
