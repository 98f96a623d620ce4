"""The model signature: read once from model.json, honoured by the runtime, batcher, data plane and protocols."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_format.signature import SignatureError, check_graph, read_signature
from service.app import build_state, create_app
from service.dataplane import InferenceRequest
from tests.conftest import BUNDLED, settings_for
from tests.service.graphs import TinyGraph, reference, signature_of, write_folder

TEXTS = ["ok", "the seats are terrible and the ride is bumpy", "not sure", "what a ride this was, honestly"]


def test_a_folder_without_a_signature_reads_as_the_fixed_names_of_its_time() -> None:
    document = json.loads((BUNDLED / "model.json").read_text())
    assert "signature" not in document
    signature = read_signature(document, [o["name"] for o in document["outputs"]])
    assert (signature.token_ids, signature.mask) == ("input_ids", "attention_mask")
    assert dict(signature.outputs) == {n: n for n in ("probabilities", "attention", "self_attention")}
    assert (signature.attention_source, signature.padding, signature.pad_id) == ("pooling", "mask", 0)
    assert signature.paddable
    assert not read_signature(document, ["probabilities", "attention"]).has("self_attention")


BAD_SIGNATURES: list[tuple[dict[str, Any], str]] = [
    ({"outputs": {"probabilities": None}}, "every model needs a probabilities output"),
    ({"inputs": {"token_ids": None}}, "every model needs a token-id input"),
    ({"inputs": {"token_ids": "tokens", "mask": None}}, "'mask' needs a mask input"),
    ({"padding": "none"}, "means no mask input, but one is named"),
    ({"padding": "sometimes"}, "signature.padding: expected one of"),
    ({"attention_source": None}, "attention_source: give it exactly when"),
    ({"self_attention_layout": "HBTT"}, "self_attention_layout: expected one of"),
    ({"outputs": {"probabilities": "probs", "attention": "probs"}}, "named for two roles"),
    ({"pad_id": -1}, "pad_id: expected an integer of at least 0"),
    ({"fixed_length": 0}, "fixed_length: expected an integer of at least 1"),
    ({"attention_layers": "block"}, "attention_layers: expected a list"),
    ({"outputs": {"probabilities": 3}}, "signature.outputs.probabilities: expected a tensor name"),
]


@pytest.mark.parametrize(("change", "message"), BAD_SIGNATURES)
def test_a_malformed_signature_is_refused_with_the_field_named(change: dict[str, Any], message: str) -> None:
    raw = signature_of(TinyGraph())
    for key, value in change.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    with pytest.raises(SignatureError, match=message):
        read_signature({"signature": raw}, [])


def test_the_graph_must_have_what_the_signature_names() -> None:
    signature = read_signature({"signature": signature_of(TinyGraph())}, [])
    outputs = {"probs": (-1, 3), "per_token": (-1, -1), "maps": (-1, -1, -1)}
    check_graph(signature, {"tokens": "int64", "mask": "int64"}, outputs)
    with pytest.raises(SignatureError, match="the graph's inputs are"):
        check_graph(signature, {"tokens": "int64"}, outputs)
    with pytest.raises(SignatureError, match="must be int32 or int64, not float32"):
        check_graph(signature, {"tokens": "float32", "mask": "float32"}, outputs)
    with pytest.raises(SignatureError, match="has rank 4, not 3"):
        check_graph(signature, {"tokens": "int64", "mask": "int64"}, {**outputs, "maps": (-1, 1, -1, -1)})
    with pytest.raises(SignatureError, match="the graph has no output 'per_token'"):
        check_graph(signature, {"tokens": "int64", "mask": "int64"}, {"probs": (-1, 3), "maps": (-1, -1, -1)})


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    return tmp_path / "repository"


def client_for(root: Path, **overrides: object) -> TestClient:
    return TestClient(create_app(settings_for(root, **overrides)))


def ids_of(client: TestClient, model: str, text: str) -> np.ndarray:
    body = {"instances": [text]}
    tokens = client.post(f"/v1/models/{model}:predict", json=body).json()["predictions"][0]["tokens"]
    return np.array(ids_of_words(tokens))


@pytest.mark.parametrize("layout", ["BTT", "BHTT", "BLHTT"])
def test_renamed_tensors_and_any_layout_serve_through_the_signature(tiny_root: Path, layout: str) -> None:
    write_folder(tiny_root, TinyGraph(layout=layout))
    with client_for(tiny_root) as client:
        response = client.post("/v1/models/tiny:predict", json={"instances": TEXTS, "parameters": {"attention": "all"}})
        assert response.status_code == 200, response.text
        for text, row in zip(TEXTS, response.json()["predictions"], strict=True):
            expected = reference(ids_of(client, "tiny", text))
            np.testing.assert_allclose(list(row["probabilities"].values()), expected["probabilities"], atol=1e-5)
            np.testing.assert_allclose(row["attention"], expected["attention"], atol=1e-5)
            assert np.asarray(row["self_attention"]).shape == (1, 1, len(row["tokens"]), len(row["tokens"]))
            np.testing.assert_allclose(row["self_attention"][0][0], expected["maps"], atol=1e-5)
            np.testing.assert_allclose(sum(row["rollout"]), 1.0, atol=1e-5)
        metadata = client.get("/v2/models/tiny").json()
        shapes = {t["name"]: t["shape"] for t in metadata["outputs"]}
        assert shapes["self_attention"] == [-1, 1, 1, -1, -1]
        assert metadata["attention_serve"]["signature"]["outputs"]["probabilities"] == "probs"
        assert metadata["attention_serve"]["signature"]["attention_source"] == "received"


def test_padding_would_change_an_unmasked_models_answer() -> None:
    """Why the no-mask mode exists: the same sequence, padded, gets another answer from this graph."""
    import onnxruntime as ort

    from tests.service.graphs import build

    session = ort.InferenceSession(build(TinyGraph(mask=None)).SerializeToString())
    alone = session.run(["probs"], {"tokens": np.array([[5, 6, 7]])})[0]
    padded = session.run(["probs"], {"tokens": np.array([[5, 6, 7, 0, 0]])})[0]
    assert np.abs(alone - padded).max() > 1e-3


@pytest.mark.anyio
@pytest.mark.parametrize("split_min", [0, 2])
async def test_an_unpaddable_model_gives_each_text_in_a_mixed_batch_its_answer_alone(
    tiny_root: Path, split_min: int
) -> None:
    write_folder(tiny_root, TinyGraph(mask=None))
    state = build_state(settings_for(tiny_root, batch_split_min=split_min, max_queue_delay_ms=60_000, max_batch_size=4))
    await state.repository.start()
    try:
        everything = frozenset({"all"})
        # The queue waits a minute for a full batch: only one batch of all four can answer in time.
        requests = [state.dataplane.infer(InferenceRequest("tiny", None, [t], everything)) for t in TEXTS]
        together = await asyncio.wait_for(asyncio.gather(*requests), timeout=30)
        assert 'attention_serve_batch_size_count{model="tiny",version="1"} 1.0' in state.metrics.render().decode()
        served = state.repository.get("tiny")
        assert not served.folder.spec.signature.paddable
        tokenizer = served.folder.tokenizer
        for text, result in zip(TEXTS, together, strict=True):
            expected = reference(tokenizer.encode([text])[0].ids)
            prediction = result.predictions[0]
            np.testing.assert_allclose(prediction.probabilities, expected["probabilities"], atol=1e-5)
            np.testing.assert_allclose(prediction.attention, expected["attention"], atol=1e-5)
    finally:
        await state.repository.stop()


@pytest.fixture
def bare_client(tiny_root: Path) -> Iterator[TestClient]:
    write_folder(tiny_root, TinyGraph(attention=None, self_attention=None))
    with client_for(tiny_root) as client:
        yield client


def test_a_model_without_attention_serves_predictions_only(bare_client: TestClient) -> None:
    native = bare_client.post("/v1/models/tiny:predict", json={"instances": TEXTS[:2]})
    assert native.status_code == 200, native.text
    assert all("attention" not in row and "label" in row for row in native.json()["predictions"])
    everything = bare_client.post(
        "/v1/models/tiny:predict", json={"instances": ["ok"], "parameters": {"attention": "all"}}
    )
    assert set(everything.json()["predictions"][0]) == {"label", "probabilities", "truncated", "tokens", "offsets"}
    v2 = bare_client.post(
        "/v2/models/tiny/infer", json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}
    )
    assert {o["name"] for o in v2.json()["outputs"]} == {"label", "probabilities", "lengths"}
    metadata = bare_client.get("/v2/models/tiny").json()
    names = {t["name"] for t in metadata["outputs"]}
    assert names == {"label", "probabilities", "lengths", "tokens", "offsets", "occlusion"}  # occlusion needs no maps
    assert metadata["attention_serve"]["attention_outputs"] == []


@pytest.mark.parametrize("attention", ["pooling", "rollout", ["self_attention"]])
def test_asking_a_model_without_attention_for_it_is_a_clear_400(bare_client: TestClient, attention: object) -> None:
    body = {"instances": ["ok"], "parameters": {"attention": attention}}
    response = bare_client.post("/v1/models/tiny:predict", json=body)
    assert response.status_code == 400
    assert "model 'tiny' version 1 has no" in response.json()["error"]
    assert "its attention outputs: none" in response.json()["error"]


def test_v2_asking_for_a_missing_output_is_a_clear_400(bare_client: TestClient) -> None:
    body = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ok"]}],
        "outputs": [{"name": "rollout"}],
    }
    response = bare_client.post("/v2/models/tiny/infer", json=body)
    assert response.status_code == 400
    assert "has no rollout output" in response.json()["error"]


def test_a_fixed_length_graph_is_padded_to_its_length(tiny_root: Path) -> None:
    write_folder(tiny_root, TinyGraph(fixed_length=12))
    with client_for(tiny_root) as client:
        response = client.post("/v1/models/tiny:predict", json={"instances": ["ok", "a longer text than that"]})
        assert response.status_code == 200, response.text
        rows = response.json()["predictions"]
        assert [len(r["attention"]) for r in rows] == [len(r["tokens"]) for r in rows]
        too_long = client.post("/v1/models/tiny:predict", json={"instances": ["word " * 13]})
        assert too_long.status_code == 400
        assert "more than the model's maximum of 12" in too_long.json()["error"]


SIGNED = signature_of(TinyGraph())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"signature": {**SIGNED, "outputs": {**SIGNED["outputs"], "probabilities": "absent"}}}, "no output 'absent'"),
        ({"signature": {**SIGNED, "padding": "banana"}}, "signature.padding"),
        ({"max_sequence_length": 99, "signature": {**SIGNED, "fixed_length": 12}}, "fixed_length"),
    ],
)
def test_a_folder_whose_signature_does_not_fit_fails_with_its_reason(
    tiny_root: Path, change: dict[str, Any], reason: str
) -> None:
    write_folder(tiny_root, TinyGraph(), **change)
    with client_for(tiny_root) as client:
        status = client.get("/v1/models/tiny").json()["model_version_status"][0]
        assert status["state"] == "END"
        assert reason in status["status"]["error_message"]


def bert_style_tokenizer(path: Path) -> dict[str, int]:
    """The bundled WordPiece with a BERT post-processor: [CLS] … [SEP] around every text."""
    from tokenizers import Tokenizer, processors

    tokenizer = Tokenizer.from_file(str(BUNDLED / "tokenizer.json"))
    vocabulary = tokenizer.get_vocab()
    special = {"[CLS]": vocabulary["[UNK]"] + 1, "[SEP]": vocabulary["[UNK]"] + 2}  # any two ids of the vocabulary
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=list(special.items())
    )
    path.write_text(tokenizer.to_str())
    return special


def test_the_tokenizers_own_special_tokens_are_added_and_kept_when_cutting(tiny_root: Path) -> None:
    folder = write_folder(tiny_root, TinyGraph(), max_sequence_length=6)
    special = bert_style_tokenizer(folder / "tokenizer.json")
    document = json.loads((folder / "model.json").read_text())
    document["sha256"]["tokenizer.json"] = hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(document))
    with client_for(tiny_root) as client:
        row = client.post("/v1/models/tiny:predict", json={"instances": ["ok then"]}).json()["predictions"][0]
        assert row["tokens"] == ["[CLS]", "ok", "then", "[SEP]"]
        assert row["offsets"][0] == row["offsets"][-1] == [0, 0]
        too_long = client.post("/v1/models/tiny:predict", json={"instances": ["one two three four five"]})
        assert "7 tokens, more than the model's maximum of 6" in too_long.json()["error"]
        body = {"instances": ["one two three four five"], "parameters": {"truncate": True}}
        cut = client.post("/v1/models/tiny:predict", json=body).json()["predictions"][0]
        assert cut["truncated"] is True
        assert cut["tokens"] == ["[CLS]", "one", "two", "three", "four", "[SEP]"]  # the closing [SEP] is kept
        ids = [special["[CLS]"], *ids_of_words(["one", "two", "three", "four"]), special["[SEP]"]]
        np.testing.assert_allclose(
            list(cut["probabilities"].values()), reference(np.array(ids))["probabilities"], atol=1e-5
        )


def ids_of_words(words: list[str]) -> list[int]:
    vocabulary = json.loads((BUNDLED / "tokenizer.json").read_text())["model"]["vocab"]
    return [vocabulary[w] for w in words]
