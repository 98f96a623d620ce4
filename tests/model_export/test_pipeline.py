"""A tiny training run on the needle task, exported, checked for parity, and its attention inspected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from model_export import pipeline
from model_export.config import ModelConfig, TrainConfig
from model_export.data import needle_task
from model_export.export import PARITY_TOLERANCE
from model_export.tokenization import encode_batch, load_tokenizer
from model_export.verify import verify_folder
from service.explain import attention_rollout
from tests.conftest import served_signature

NEEDLES = ("alpha", "bravo", "charlie")


@pytest.fixture(scope="module")
def needle_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    request = pipeline.ExportRequest(
        repository=root,
        name="needle",
        model=ModelConfig(vocab_size=300, max_len=40, d_model=32, num_heads=2, num_layers=1, ff_dim=64, num_classes=3),
        training=TrainConfig(epochs=8, batch_size=32, patience=3, learning_rate=3e-3),
        variants=("int8", "fp16"),
    )
    return pipeline.run(needle_task(3000, seed=1), request, verbose=0)


def test_export_writes_a_complete_version_that_verifies(needle_model: Path) -> None:
    assert needle_model.name == "1"
    metadata = json.loads((needle_model / "model.json").read_text())
    assert metadata["labels"] == ["a", "b", "c"]
    assert metadata["metrics"]["accuracy"] > 0.95
    assert metadata["parity"]["max_abs_diff"] <= PARITY_TOLERANCE
    assert metadata["parity"]["cases"] >= 9
    assert {i["name"] for i in metadata["inputs"]} == {"input_ids", "attention_mask"}
    assert [o["shape"] for o in metadata["outputs"] if o["name"] == "self_attention"] == [["batch", 1, 2, "seq", "seq"]]
    for kind in ("int8", "fp16"):
        variant = metadata["variants"][kind]
        assert abs(variant["accuracy_delta"]) < 0.05
        assert len(metadata["sha256"][variant["file"]]) == 64
    assert verify_folder(needle_model)["labels"] == ["a", "b", "c"]


def test_train_writes_the_signature_the_service_reads(needle_model: Path) -> None:
    document = json.loads((needle_model / "model.json").read_text())
    assert document["signature"] == {
        "inputs": {"token_ids": "input_ids", "mask": "attention_mask", "segments": None},
        "outputs": {"probabilities": "probabilities", "attention": "attention", "self_attention": "self_attention"},
        "attention_source": "pooling",
        "self_attention_layout": "BLHTT",
        "attention_layers": ["block_0"],
        "pad_id": 0,
        "padding": "mask",
        "fixed_length": None,
        "pairs": False,
        "text": {"origin": "trained"},
    }
    read = served_signature(document)
    assert read.paddable


def test_exported_attention_peaks_on_the_needle(needle_model: Path) -> None:
    """Rollout of the exported attention (pooling through the self-attention) finds the deciding token.

    The raw pooling weights alone need not: self-attention can carry the needle to other positions first,
    and the pooling may then read it anywhere. Rollout follows that flow back to the input tokens.
    """
    tokenizer = load_tokenizer(needle_model / "tokenizer.json")
    session = ort.InferenceSession(str(needle_model / "model.onnx"), providers=["CPUExecutionProvider"])
    samples = needle_task(200, seed=99)
    ids, mask = encode_batch(tokenizer, samples.texts, 40)
    probabilities, pooling, self_attention = session.run(
        ["probabilities", "attention", "self_attention"], {"input_ids": ids, "attention_mask": mask}
    )
    needle_ids = {tokenizer.token_to_id(word) for word in NEEDLES}
    peaks = []
    for i, length in enumerate(mask.sum(axis=1)):
        rollout = attention_rollout(self_attention[i][:, :, :length, :length], pooling[i][:length])
        peaks.append(int(ids[i, int(np.argmax(rollout))]) in needle_ids)
    assert np.mean(peaks) >= 0.9
    assert np.mean(np.array(["abc"[k] for k in probabilities.argmax(-1)]) == np.array(samples.labels)) > 0.95


def test_variants_command_derives_the_next_version(needle_model: Path) -> None:
    from model_export.derive import add_variants

    derived = add_variants(needle_model, ["optimized"])
    assert derived.name == "2"
    assert (needle_model / "model.json").read_text() != (derived / "model.json").read_text()
    metadata = json.loads((derived / "model.json").read_text())
    assert set(metadata["variants"]) == {"int8", "fp16", "optimized"}
    assert metadata["variants"]["optimized"]["agreement"] > 0.99
    assert metadata["derived_from"] == {"version": 1, "added_variants": ["optimized"]}
    assert verify_folder(derived)["version"] == 2
    assert not (needle_model / "model.optimized.onnx").exists()
