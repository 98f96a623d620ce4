"""keras-hub's pretrained classifiers (and a TF Hub BERT SavedModel) import with no more than ``--labels``: inputs by
role, their own tokenizer rebuilt and held to their preprocessor, [CLS]-read attention, every encoder layer's maps
named by index, each weight stored once, no machine path in model.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from model_export import feeds
from model_export.verify import verify_folder
from model_format.document import load_tokenizer, read_document, read_spec
from model_format.signature import read_signature
from tests.conftest import served_signature
from tests.model_export.hub_models import KINDS, LABELS, PAIRS, TEXTS, HubModel

pytestmark = pytest.mark.export
SEGMENTS = {"bert", "albert", "electra", "tf_hub_bert"}  # the families whose backbone takes segment ids


def test_each_family_imports_with_its_inputs_by_role(hub_models: dict[str, HubModel]) -> None:
    for kind in KINDS:
        document = read_document(hub_models[kind].folder)
        signature = read_signature(document)
        assert signature.input_names == [
            "input_ids",
            "attention_mask",
            *(["token_type_ids"] if kind in SEGMENTS else []),
        ]
        assert (signature.padding, signature.pairs, signature.attention_source) == ("mask", True, "cls"), kind
        assert signature.attention_layers == ("layer 0", "layer 1"), kind  # keras-hub repeats one name per layer
        assert document["labels"] == list(LABELS)
        served_signature(document)


def test_the_tokenizer_came_with_the_model_and_was_held_to_its_preprocessor(hub_models: dict[str, HubModel]) -> None:
    kinds = {"bert": "wordpiece", "distil_bert": "wordpiece", "roberta": "byte_level_bpe", "albert": "sentencepiece"}
    kinds |= {"deberta_v3": "sentencepiece", "electra": "wordpiece"}
    for kind, tokenizer in kinds.items():
        text = read_signature(read_document(hub_models[kind].folder)).text
        assert (text["origin"], text["kind"], text["checked_against"]) == (
            "keras_hub",
            tokenizer,
            "keras_hub_preprocessor",
        )
        assert text["pairs"] > 0
        assert text["texts"] >= 13
    tf_hub = read_signature(read_document(hub_models["tf_hub_bert"].folder)).text
    assert (tf_hub["origin"], tf_hub["kind"], tf_hub["lowercase"]) == ("vocab", "wordpiece", True)


def test_each_weight_is_stored_once(hub_models: dict[str, HubModel]) -> None:
    for kind in KINDS:
        graph = onnx.load(hub_models[kind].folder / "model.onnx").graph
        stored = sum(onnx.numpy_helper.to_array(t).nbytes for t in graph.initializer)
        weights = hub_models[kind].parameters * 4  # float32
        assert stored <= 1.05 * weights, kind  # (identical weights, e.g. zero biases, may share one)


def test_model_json_names_files_not_machine_paths(hub_models: dict[str, HubModel]) -> None:
    for kind in KINDS:
        folder = hub_models[kind].folder
        raw = (folder / "model.json").read_text()
        assert str(folder.parents[2]) not in raw, kind
        options = json.loads(raw)["source"]["options"]
        assert options["model"] == hub_models[kind].request.model.name
        assert options["repository"] == "repository"


@pytest.mark.parametrize("kind", KINDS)
def test_the_graph_answers_pairs_and_texts_as_the_original_does(hub_models: dict[str, HubModel], kind: str) -> None:
    """In-process, with the folder's own tokenizer (what the service runs): each text alone and each pair alone."""
    model = hub_models[kind]
    document = read_document(model.folder)
    spec = read_spec(document, kind, 1)
    tokenizer = load_tokenizer(model.folder, spec, np.dtype(np.int32))
    session = ort.InferenceSession(str(model.folder / "model.onnx"), providers=["CPUExecutionProvider"])
    signature = spec.signature
    for encoded, expected in [
        *zip(tokenizer.encode(list(TEXTS)), model.texts, strict=True),
        *zip(tokenizer.encode_pairs(list(PAIRS)), model.pairs, strict=True),
    ]:
        call = feeds.feed([list(encoded.ids)], signature)
        if signature.segments:
            call[signature.segments] = np.asarray([encoded.type_ids], np.int32)
        (probabilities,) = session.run(["probabilities"], call)
        np.testing.assert_allclose(probabilities[0], expected, atol=1e-4, err_msg=kind)


def test_verify_accepts_every_imported_family(hub_models: dict[str, HubModel]) -> None:
    for kind in KINDS:
        assert verify_folder(hub_models[kind].folder)["signature"]["pairs"] is True


def test_a_preset_folder_imports_like_a_keras_file(hub_models: dict[str, HubModel]) -> None:
    model = hub_models["deberta_v3"]
    assert model.request.model.is_dir()
    assert read_document(model.folder)["source"]["format"] == "keras"


def describe(model: HubModel) -> dict[str, Any]:
    return json.loads((model.folder / "model.json").read_text())["source"]


def test_the_classifiers_logits_were_detected(hub_models: dict[str, HubModel]) -> None:
    for kind in ("bert", "distil_bert", "roberta", "albert", "deberta_v3"):
        assert describe(hub_models[kind])["logits"] is True, kind
    assert describe(hub_models["electra"])["logits"] is False  # its Dense head has a softmax


def write_vocab(path: Path, tokens: list[str]) -> Path:
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def test_the_lean_graph_fuses_what_it_can_and_answers_as_the_explaining_one(hub_models: dict[str, HubModel]) -> None:
    for kind in ("bert", "distil_bert", "roberta", "albert", "electra"):
        folder = hub_models[kind].folder
        record = read_document(folder)["lean"]
        assert record["file"] == "model.lean.onnx", kind
        # every norm, and every attention layer but the last, whose [CLS] row is the per-token attention
        assert record["fused"]["Attention"] == 1, kind
        assert record["fused"]["LayerNormalization"] >= 4, kind
        assert record["parity_with_explaining"] <= 1e-4
        # ONNX Runtime's transformer optimizer then finds its patterns: residual + norm, bias + GELU
        assert record["fused"]["optimizer SkipLayerNormalization"] >= 2, kind
        ops = {node.op_type for node in onnx.load(folder / "model.lean.onnx").graph.node}
        assert {"Attention", "SkipLayerNormalization"} <= ops
        assert "GlobalAveragePool" not in ops  # tf2onnx's LayerNorm arithmetic is gone
        outputs = [o.name for o in onnx.load(folder / "model.lean.onnx").graph.output]
        assert sorted(outputs) == ["attention", "probabilities"]
    deberta = read_document(hub_models["deberta_v3"].folder)["lean"]
    assert deberta["fused"]["Attention"] == 0  # DisentangledSelfAttention has no fused kernel: its norms only
    assert read_document(hub_models["tf_hub_bert"].folder)["lean"]["file"] is None  # a SavedModel has no layers


def test_the_int8_variant_has_a_lean_twin_with_quantized_attention(hub_models: dict[str, HubModel]) -> None:
    folder = hub_models["bert"].folder
    twin = read_document(folder)["variants"]["int8"]["lean"]
    assert twin["file"] == "model.int8.lean.onnx"
    assert twin["agreement"] >= 0.99
    ops = {node.op_type for node in onnx.load(folder / twin["file"]).graph.node}
    assert "QAttention" in ops
