"""Users' own TensorFlow models, imported with ``python -m model_export import`` and served by the real server.

For each kind (tests/model_export/user_models.py: the seed's custom layer without a mask, MultiHeadAttention with a
tokenizer.json, TextVectorization, logits, a SavedModel, no attention): the server's probabilities match Keras,
a batch gives each text its answer alone, attention has the signature's shapes and sums, both protocols' metadata
describe the real signature, and the page renders it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import RunningServer, predict, probabilities, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.export]
KINDS = ("seed", "mha", "text_vectorization", "logits", "saved_model", "no_attention")
PARITY = 1e-4
# kind: (self-attention layers, heads) or None, attention source
EXPECTED: dict[str, tuple[tuple[int, int] | None, str | None]] = {
    "seed": ((1, 1), "received"),
    "mha": ((2, 2), "received"),
    "text_vectorization": ((1, 1), "received"),
    "logits": ((1, 2), "pooling"),
    "saved_model": ((1, 4), "received"),
    "no_attention": (None, None),
}


@pytest.fixture(scope="module")
def server(user_models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = user_models["seed"].folder.parents[1]
    running = start_server(repository, tmp_path_factory.mktemp("imported") / "server.log")
    yield running
    running.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_served_answers_match_keras_and_a_batch_gives_each_text_its_answer_alone(
    server: RunningServer, user_models: dict[str, Any], kind: str
) -> None:
    model = user_models[kind]
    texts = list(model.texts)
    together = predict(server, kind, texts)  # one request: one batch of texts of several lengths
    assert len({len(row["tokens"]) for row in together}) > 1
    np.testing.assert_allclose(probabilities(together), model.predict(texts), atol=PARITY)
    for text, batched in zip(texts, together, strict=True):
        (alone,) = predict(server, kind, [text])
        np.testing.assert_allclose(probabilities([batched]), probabilities([alone]), atol=1e-5)
        for name in ("attention", "rollout", "self_attention"):
            if name in alone:
                np.testing.assert_allclose(batched[name], alone[name], atol=1e-5, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_has_the_signatures_shapes_and_sums(
    server: RunningServer, user_models: dict[str, Any], kind: str
) -> None:
    layers_heads, _ = EXPECTED[kind]
    for row in predict(server, kind, list(user_models[kind].texts)[:3]):
        length = len(row["tokens"])
        assert len(row["offsets"]) == length
        if layers_heads is None:
            assert {"attention", "self_attention", "rollout"}.isdisjoint(row)
            continue
        assert len(row["attention"]) == length
        assert sum(row["attention"]) == pytest.approx(1.0, abs=1e-5)
        matrices = np.asarray(row["self_attention"])
        assert matrices.shape == (*layers_heads, length, length)
        np.testing.assert_allclose(matrices.sum(-1), 1.0, atol=1e-4)  # each query's weights over the real keys
        assert sum(row["rollout"]) == pytest.approx(1.0, abs=1e-5)


def test_a_model_without_attention_says_so_when_asked_for_it(server: RunningServer) -> None:
    body = {"instances": ["the cat sat"], "parameters": {"attention": "rollout"}}
    response = httpx.post(f"{server.url}/v1/models/no_attention:predict", json=body, timeout=10)
    assert response.status_code == 400
    assert "has no rollout output; its attention outputs: none" in response.json()["error"]


@pytest.mark.parametrize("kind", KINDS)
def test_both_protocols_describe_the_real_signature(
    server: RunningServer, user_models: dict[str, Any], kind: str
) -> None:
    signature = json.loads((user_models[kind].folder / "model.json").read_text())["signature"]
    v2 = httpx.get(f"{server.url}/v2/models/{kind}", timeout=10).json()
    described = v2["attention_serve"]["signature"]
    for field in ("padding", "attention_source", "attention_layers", "fixed_length", "pad_id"):
        assert described[field] == signature.get(field), field
    assert described["inputs"]["mask"] == signature["inputs"]["mask"]
    outputs = {t["name"]: t["shape"] for t in v2["outputs"]}
    layers_heads, source = EXPECTED[kind]
    assert ("attention" in outputs) == (source is not None)
    assert described["attention_source"] == source
    if layers_heads is None:
        assert "self_attention" not in outputs
        assert "rollout" not in outputs
    else:
        assert outputs["self_attention"] == [-1, *layers_heads, -1, -1]
    native = httpx.get(f"{server.url}/v1/models/{kind}/metadata", timeout=10).json()
    signature_def = native["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(signature_def["outputs"]) == set(outputs)
    assert native["attention_serve"]["signature"] == described


@pytest.mark.parametrize("kind", KINDS)
def test_the_page_renders_each_imported_model(
    page: Page, console: list[str], server: RunningServer, user_models: dict[str, Any], kind: str
) -> None:
    text = user_models[kind].texts[0]
    (expected,) = predict(server, kind, [text])
    page.select_option("#model", kind)
    page.fill("#text", text)
    page.click("#submit")
    expect(page.locator("#answered-by")).to_contain_text(f"{kind} · version 1")
    tokens = page.locator("#sequences .token")
    expect(tokens).to_have_count(len(expected["tokens"]))
    assert tokens.all_text_contents() == [
        text[start:end] or token for token, (start, end) in zip(expected["tokens"], expected["offsets"], strict=True)
    ]
    layers_heads, source = EXPECTED[kind]
    rollout, attention = (
        page.get_by_role("radio", name=name) for name in ("Rollout", f"{source or 'pooling'} attention")
    )
    if layers_heads is None:
        expect(rollout).to_be_disabled()
        # no attention to shade by, but occlusion explains any model
        expect(page.locator("#sequences .card-foot")).to_contain_text("shaded by what changed the prediction")
        expect(page.locator("#matrix-missing")).to_be_visible()
        page.uncheck("#occlusion")
        page.click("#submit")
        expect(page.locator("#sequences .card-foot")).to_contain_text("this model returns no attention")
        assert console == []  # no script error or warning
        return
    expect(rollout).to_be_checked()
    expect(attention).to_be_enabled()
    weights = tokens.evaluate_all("spans => spans.map(s => +s.dataset.weight)")
    assert weights == pytest.approx(expected["rollout"], abs=1e-6)
    layer_names = page.locator("#layer option").all_text_contents()
    assert len(layer_names) == layers_heads[0]
    layers = json.loads((user_models[kind].folder / "model.json").read_text())["signature"]["attention_layers"]
    assert all(name[:10] in label for name, label in zip(layers, layer_names, strict=True))
    expect(page.locator("#head option")).to_have_count(layers_heads[1])
    expect(page.locator("#heatmap rect[data-row]")).to_have_count(len(expected["tokens"]) ** 2)
    assert console == []  # no script error or warning


def test_the_seeds_served_attention_peaks_on_the_deciding_word(server: RunningServer) -> None:
    from model_export.data import needle_task

    samples = needle_task(100, seed=123)
    rows = predict(server, "seed", samples.texts)
    peaks = [row["tokens"][int(np.argmax(row["attention"]))] for row in rows]
    hits = np.mean([peak in ("alpha", "bravo", "charlie") for peak in peaks])
    assert hits >= 0.9, peaks  # measured 1.0
    assert np.mean([row["label"] == label for row, label in zip(rows, samples.labels, strict=True)]) >= 0.95


def test_occlusions_top_token_is_the_needle_through_the_real_server(server: RunningServer) -> None:
    """Occlusion removes each token in turn through the batcher: the one whose removal changes the answer most is
    the planted word that decides the label."""
    from model_export.data import needle_task

    samples = needle_task(100, seed=321)
    peaks = []
    for text in samples.texts:  # one text per request: each costs its tokens in variants
        (row,) = predict(server, "seed", [text], attention="none", explain="occlusion")
        peaks.append(row["tokens"][int(np.argmax(row["occlusion"]))])
    hits = np.mean([peak in ("alpha", "bravo", "charlie") for peak in peaks])
    assert hits >= 0.95, peaks
