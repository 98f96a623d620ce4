"""``import`` on each kind of user model: the signature, Keras parity, batch = alone, attention, verify/list/variants.

Each user model is built and imported once (``tests/model_export/user_models.py``); the tests read the folders
with ONNX Runtime and tokenize as the service does (the folder's tokenizer.json, no special tokens).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf

from model_export import feeds
from model_export.cli import main
from model_export.data import needle_task
from model_export.derive import add_variants
from model_export.importer import ImportRequest, run_import
from model_export.verify import verify_folder
from model_format.document import load_tokenizer, read_spec
from model_format.signature import Signature, read_signature
from tests.conftest import served_signature
from tests.model_export.user_models import KINDS, UserModel

# kind: padding, mask input, attention source, attention layers, heads, fixed length, text origin
EXPECTED: dict[str, tuple[str, bool, str | None, list[str], int | None, int | None, str]] = {
    "seed": ("none", False, "received", ["custom_attention"], 1, None, "vocab"),
    "mha": ("mask", True, "received", ["nested_mha", "top_mha"], 2, None, "tokenizer"),
    "text_vectorization": ("pad_id", False, "received", ["luong"], 1, 16, "text_vectorization"),
    "logits": ("pad_id", False, "pooling", ["mha"], 2, None, "vocab"),
    "saved_model": ("pad_id", False, "received", ["output_1"], 4, None, "vocab"),
    "no_attention": ("none", False, None, [], None, None, "vocab"),
}
PARITY = 1e-4


@pytest.fixture(scope="module")
def models(user_models: dict[str, UserModel]) -> dict[str, UserModel]:
    """Built and imported once per run (``tests/conftest.py``), shared with the end-to-end tests."""
    return user_models


class Folder:
    """An imported version folder read as the service reads it: signature, tokenizer, session."""

    def __init__(self, path: Path) -> None:
        self.document = json.loads((path / "model.json").read_text())
        self.signature: Signature = read_signature(self.document, [o["name"] for o in self.document["outputs"]])
        spec = read_spec(self.document, path.parent.name, int(self.document["version"]))
        self.tokenizer = load_tokenizer(path, spec, np.dtype(np.int32))
        self.session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
        self.max_len = int(self.document["max_sequence_length"])

    def rows(self, texts: list[str] | tuple[str, ...]) -> list[list[int]]:
        return feeds.encode(self.tokenizer, texts, self.signature)

    def run(self, rows: list[list[int]]) -> dict[str, np.ndarray]:
        call = feeds.feed(rows, self.signature)
        names = list(self.signature.outputs.values())
        return dict(zip(self.signature.outputs, self.session.run(names, call), strict=True)) | {"call": call}


def folder(models: dict[str, UserModel], kind: str) -> Folder:
    return Folder(models[kind].folder)


@pytest.mark.parametrize("kind", KINDS)
def test_the_signature_says_what_the_model_has_and_the_service_reads_it(
    models: dict[str, UserModel], kind: str
) -> None:
    padding, mask, source, layers, heads, fixed, origin = EXPECTED[kind]
    document = folder(models, kind).document
    raw = document["signature"]
    assert (raw["padding"], raw["inputs"]["mask"] is not None, raw["attention_source"]) == (padding, mask, source)
    assert (raw["attention_layers"], document["source"]["attention"]["heads"]) == (layers, heads)
    assert (raw["fixed_length"], raw["text"]["origin"]) == (fixed, origin)
    assert (raw["outputs"]["self_attention"] is not None) == bool(layers)
    assert document["labels"] == list(models[kind].labels)
    assert document["parity"]["max_abs_diff"] <= PARITY
    assert document["source"]["kind"] == "import"
    read = served_signature(document)
    assert read.paddable == (padding != "none" or fixed is not None)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_answers_each_text_as_the_keras_model_does(models: dict[str, UserModel], kind: str) -> None:
    model, served = models[kind], folder(models, kind)
    got = np.concatenate([served.run([row])["probabilities"] for row in served.rows(model.texts)])
    expected = model.predict(model.texts)
    assert got.shape == (len(model.texts), len(model.labels))
    assert float(np.max(np.abs(got - expected))) <= PARITY


@pytest.mark.parametrize("kind", [k for k in KINDS if EXPECTED[k][0] != "none" or EXPECTED[k][5]])
def test_a_padded_batch_gives_each_text_its_answer_alone(models: dict[str, UserModel], kind: str) -> None:
    served = folder(models, kind)
    rows = served.rows(models[kind].texts)
    assert len({len(row) for row in rows}) > 1
    together = served.run(rows)
    for i, row in enumerate(rows):
        alone = served.run([row])
        np.testing.assert_allclose(together["probabilities"][i], alone["probabilities"][0], atol=1e-5)
        if "attention" in alone:
            width = alone["attention"].shape[1]
            np.testing.assert_allclose(together["attention"][i, :width], alone["attention"][0], atol=1e-5)


@pytest.mark.parametrize("kind", ["seed", "no_attention"])
def test_a_model_without_a_mask_is_never_padded_because_padding_changes_its_answers(
    models: dict[str, UserModel], kind: str
) -> None:
    served = folder(models, kind)
    assert not served.signature.paddable
    with pytest.raises(ValueError, match="one length"):
        feeds.feed([[5, 6], [5, 6, 7]], served.signature)
    row = served.rows(models[kind].texts[:1])[0]
    padded = served.session.run(["probabilities"], {"input_ids": np.array([[*row, 0, 0, 0]], np.int32)})[0]
    assert float(np.max(np.abs(padded - served.run([row])["probabilities"]))) > 1e-4  # why it is marked "none"


@pytest.mark.parametrize("kind", KINDS)
def test_attention_has_the_signature_shapes_and_sums(models: dict[str, UserModel], kind: str) -> None:
    served = folder(models, kind)
    _, _, source, layers, heads, fixed, _ = EXPECTED[kind]
    rows = served.rows(models[kind].texts)
    if not served.signature.paddable:
        rows = [row for row in rows if len(row) == len(rows[0])]
    out = served.run(rows)
    width = out["call"]["input_ids"].shape[1]
    real = np.arange(width)[None, :] < np.array([len(r) for r in rows])[:, None]
    if source is None:
        assert set(out) == {"probabilities", "call"}
        return
    np.testing.assert_allclose(out["attention"].sum(-1), 1.0, atol=1e-5)
    assert np.all(out["attention"][~real] == 0)
    assert out["self_attention"].shape == (len(rows), len(layers), heads, width, width)
    row_sums = out["self_attention"].sum(-1)  # batch, layers, heads, queries
    np.testing.assert_allclose(row_sums[np.broadcast_to(real[:, None, None, :], row_sums.shape)], 1.0, atol=1e-4)
    assert fixed is None or width == fixed


def test_received_attention_is_the_last_layers_attention_averaged_over_real_queries_and_heads(
    models: dict[str, UserModel],
) -> None:
    served = folder(models, "mha")
    rows = served.rows(models["mha"].texts)
    out = served.run(rows)
    for i, row in enumerate(rows):
        n = len(row)
        last = out["self_attention"][i, -1, :, :n, :n]  # heads, queries, keys
        expected = last.mean(axis=0).mean(axis=0)
        np.testing.assert_allclose(out["attention"][i, :n], expected / expected.sum(), atol=1e-5)


def test_multi_head_attention_scores_match_eager_calls_with_return_attention_scores(
    models: dict[str, UserModel],
) -> None:
    """The scores the export records beside each MHA layer are the layer's own (nested one and top one)."""
    model, served = models["mha"].keras_model, folder(models, "mha")
    rows = served.rows(models["mha"].texts)
    out = served.run(rows)
    ids, mask = out["call"]["input_ids"], out["call"]["attention_mask"]
    pairs = tf.cast(mask[:, None, :], tf.bool)
    embedded = keras.Model(model.inputs, model.get_layer("embed").output)([ids, mask])
    block_out = keras.Model(model.inputs, model.get_layer("block").output)([ids, mask])
    nested = model.get_layer("block").attention
    _, first = nested(embedded, embedded, attention_mask=pairs, return_attention_scores=True)
    _, second = model.get_layer("top_mha")(block_out, block_out, attention_mask=pairs, return_attention_scores=True)
    np.testing.assert_allclose(out["self_attention"][:, 0], np.asarray(first), atol=1e-5)
    np.testing.assert_allclose(out["self_attention"][:, 1], np.asarray(second), atol=1e-5)


def test_the_seeds_model_scores_its_data_and_its_attention_peaks_on_the_needle(
    models: dict[str, UserModel],
) -> None:
    served = folder(models, "seed")
    assert served.document["metrics"]["accuracy"] >= 0.95
    assert served.document["metrics"]["rows"] == 400
    samples = needle_task(200, seed=99)
    hits, correct = [], []
    for text, label in zip(samples.texts, samples.labels, strict=True):
        (encoding,) = served.tokenizer.encode([text])
        out = served.run([list(encoding.ids)])
        hits.append(encoding.tokens[int(out["attention"][0].argmax())] in ("alpha", "bravo", "charlie"))
        correct.append("abc"[int(out["probabilities"][0].argmax())] == label)
    assert np.mean(correct) >= 0.95
    assert np.mean(hits) >= 0.9  # measured 1.0: every query attends to the needle


def test_text_vectorization_is_split_off_and_fixed_length_kept(models: dict[str, UserModel]) -> None:
    served = folder(models, "text_vectorization")
    assert served.document["inputs"][0]["shape"] == ["batch", 16]
    assert served.max_len == 16
    assert served.document["parity"]["per_output"]["probabilities_from_text"] <= PARITY
    out = served.run(served.rows(["Terrible!!! never again?"]))
    assert out["call"]["input_ids"].shape == (1, 16)
    assert {node.op_type for node in _graph(models["text_vectorization"].folder).node}.isdisjoint(
        {"StringNormalizer", "LookupTable", "HashTable"}
    )


def test_logits_get_a_softmax_and_the_models_own_pooling_weights_are_its_attention(
    models: dict[str, UserModel],
) -> None:
    served, model = folder(models, "logits"), models["logits"].keras_model
    rows = served.rows(models["logits"].texts)
    out = served.run(rows)
    logits, weights = (np.asarray(t) for t in model(out["call"]["input_ids"]))
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(out["probabilities"], probabilities, atol=1e-5)
    np.testing.assert_allclose(out["attention"], weights, atol=1e-5)
    assert served.document["source"]["logits"] is True


def test_a_saved_models_attention_output_becomes_self_attention(models: dict[str, UserModel]) -> None:
    served, function = folder(models, "saved_model"), models["saved_model"].keras_model
    rows = served.rows(models["saved_model"].texts)
    out = served.run(rows)
    scores = function(token_ids=tf.constant(out["call"]["input_ids"]))["output_1"]
    np.testing.assert_allclose(out["self_attention"][:, 0], np.asarray(scores), atol=1e-5)
    assert served.document["source"]["format"] == "saved_model"


def test_a_savedmodel_from_tf_saved_model_save_imports_too(tmp_path: Path) -> None:
    """``tf.saved_model.save`` names the input ``inputs``; the group-query scores it outputs become self_attention."""
    keras.utils.set_random_seed(6)
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(30, 8)(ids)
    x, scores = keras.layers.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2, name="gqa")(
        x, x, return_attention_scores=True
    )
    model = keras.Model(
        ids, [keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x)), scores]
    )
    tf.saved_model.save(model, str(tmp_path / "saved"))
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", *(f"w{i}" for i in range(28))]) + "\n")
    request = ImportRequest(
        tmp_path / "saved", ("a", "b"), tmp_path / "repository", "plain", vocab=tmp_path / "vocab.txt", max_len=12
    )
    served = Folder(run_import(request))
    assert served.document["signature"]["padding"] == "none"  # unmasked: padding changes the answers
    assert served.document["source"]["attention"] == {"per_token": "received", "layers": ["output_1"], "heads": 4}
    rows = served.rows(["w1 w2 w3 w4 w5"])
    out = served.run(rows)
    expected = model(out["call"]["input_ids"])
    np.testing.assert_allclose(out["probabilities"], np.asarray(expected[0]), atol=PARITY)
    np.testing.assert_allclose(out["self_attention"][:, 0], np.asarray(expected[1]), atol=PARITY)


def test_a_mask_input_that_does_not_make_padding_safe_is_fed_all_ones(tmp_path: Path) -> None:
    """The model zeroes padded states but averages over every position: padded, its answers change."""
    keras.utils.set_random_seed(7)
    ids, mask = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32", name="mask")
    x = keras.layers.Embedding(30, 8)(ids) * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    model = keras.Model(
        [ids, mask], keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x))
    )
    model.save(tmp_path / "model.keras")
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", *(f"w{i}" for i in range(28))]) + "\n")
    request = ImportRequest(
        tmp_path / "model.keras", ("a", "b"), tmp_path / "repository", "m", vocab=tmp_path / "vocab.txt", max_len=12
    )
    served = Folder(run_import(request))
    assert served.signature.padding == "none"
    assert served.signature.mask is None
    assert [i["name"] for i in served.document["inputs"]] == ["input_ids"]
    row = served.rows(["w1 w2 w3"])[0]
    expected = model([np.array([row]), np.ones((1, 3), np.int32)])
    np.testing.assert_allclose(served.run([row])["probabilities"], np.asarray(expected), atol=PARITY)


def test_verify_and_list_work_on_imported_folders(
    models: dict[str, UserModel], capsys: pytest.CaptureFixture[str]
) -> None:
    for kind in KINDS:
        summary = verify_folder(models[kind].folder)
        assert summary["labels"] == list(models[kind].labels)
    repository = models["seed"].folder.parent.parent
    assert main(["list", "--repository", str(repository)]) == 0
    listed = capsys.readouterr().out
    assert all(f"{kind}/1\t" in listed for kind in KINDS)
    assert '"macro_f1"' in listed.split("seed/1\t")[1].splitlines()[0]


def test_variants_of_imported_folders_are_scored_on_their_data_or_compared_on_random_ids(
    models: dict[str, UserModel], tmp_path: Path
) -> None:
    copies = {kind: tmp_path / kind / "1" for kind in ("seed", "mha")}  # the shared folders stay as imported
    for kind, copy in copies.items():
        shutil.copytree(models[kind].folder, copy)
    with_data = json.loads((add_variants(copies["seed"], ["int8"]) / "model.json").read_text())
    assert isinstance(with_data["variants"]["int8"]["accuracy_delta"], float)
    assert abs(with_data["variants"]["int8"]["accuracy_delta"]) <= 0.05
    without = add_variants(copies["mha"], ["fp16"])
    info = json.loads((without / "model.json").read_text())["variants"]["fp16"]
    assert info["accuracy_delta"] is None
    assert info["agreement"] >= 0.9
    assert info["max_probability_diff"] < 0.01
    assert verify_folder(without)["signature"]["padding"] == "mask"


def _graph(path: Path) -> Any:
    import onnx

    return onnx.load(path / "model.onnx").graph
