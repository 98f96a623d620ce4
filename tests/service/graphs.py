"""Tiny ONNX classifiers built with ``onnx.helper``, written as model folders with a signature (no TensorFlow).

The graph: embeddings (+ a segment embedding when it takes segment ids) → one self-attention (scores x·xᵀ/√D,
softmax over keys, masked when there is a mask) → mean over the positions (masked, or over every position when there
is no mask) → a linear layer → softmax. Its per-token attention is the attention each token receives, averaged over
the queries. ``reference`` computes the same in numpy, so a test can check any answer against the model alone on the
exact sequence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, processors

from tests.conftest import BUNDLED

VOCAB, WIDTH, CLASSES = 8000, 4, 3
SPECIALS = ("[CLS]", "[SEP]")  # added after the bundled vocabulary (ids 8000, 8001) for the pair tokenizer
LABELS = ["negative", "neutral", "positive"]


@dataclass(frozen=True)
class TinyGraph:
    """Which tensors the graph has and what they are called."""

    ids: str = "tokens"
    mask: str | None = "mask"
    probabilities: str = "probs"
    attention: str | None = "per_token"
    self_attention: str | None = "maps"
    layout: str = "BTT"  # BTT, BHTT or BLHTT (one layer, one head)
    id_type: int = TensorProto.INT64
    fixed_length: int | None = None
    segments: str | None = None  # a segment-id input (then the tokenizer joins pairs: [CLS] a [SEP] b [SEP])


def weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    embedding = rng.normal(0, 1, (VOCAB + len(SPECIALS), WIDTH)).astype(np.float32)
    return embedding, rng.normal(0, 1, (WIDTH, CLASSES)).astype(np.float32)


def segment_weights() -> np.ndarray:
    return np.random.default_rng(7).normal(0, 1, (2, WIDTH)).astype(np.float32)


def reference(ids: np.ndarray, segments: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The graph's answer for one unpadded sequence (any mask is all ones), in numpy."""
    embedding, head = weights()
    x = embedding[ids] + (segment_weights()[segments] if segments is not None else 0)
    scores = x @ x.T / np.sqrt(WIDTH)
    attention = np.exp(scores - scores.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    logits = (attention @ x).mean(0) @ head
    probabilities = np.exp(logits - logits.max())
    return {"probabilities": probabilities / probabilities.sum(), "attention": attention.mean(0), "maps": attention}


def _nodes(graph: TinyGraph) -> list[onnx.NodeProto]:
    make = helper.make_node
    gathered = "tokens_x" if graph.segments else "x"
    nodes = [make("Gather", ["embedding", graph.ids], [gathered])]
    if graph.segments:
        nodes += [make("Gather", ["segment_embedding", graph.segments], ["segments_x"])]
        nodes += [make("Add", ["tokens_x", "segments_x"], ["x"])]
    nodes += [
        make("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        make("MatMul", ["x", "xt"], ["raw"]),
        make("Mul", ["raw", "scale"], ["scores"]),
    ]
    if graph.mask is None:
        nodes += [
            make("Softmax", ["scores"], ["weights"], axis=-1),
            make("MatMul", ["weights", "x"], ["context"]),
            make("ReduceMean", ["context"], ["pooled"], axes=[1], keepdims=0),
            make("ReduceMean", ["weights"], ["received"], axes=[1], keepdims=0),
        ]
    else:
        nodes += [
            make("Cast", [graph.mask], ["maskf"], to=TensorProto.FLOAT),
            make("Sub", ["one", "maskf"], ["padding"]),
            make("Mul", ["padding", "neg"], ["bias2"]),
            make("Unsqueeze", ["bias2", "axis1"], ["bias"]),
            make("Add", ["scores", "bias"], ["masked"]),
            make("Softmax", ["masked"], ["weights"], axis=-1),
            make("MatMul", ["weights", "x"], ["context"]),
            make("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
            make("Mul", ["context", "mask3"], ["kept"]),
            make("ReduceSum", ["kept", "axis1"], ["total"], keepdims=0),
            make("ReduceSum", ["maskf", "axis1"], ["count"], keepdims=1),
            make("Div", ["total", "count"], ["pooled"]),
            make("Mul", ["weights", "mask3"], ["real_queries"]),
            make("ReduceSum", ["real_queries", "axis1"], ["received_total"], keepdims=0),
            make("Div", ["received_total", "count"], ["received"]),
        ]
    nodes += [make("MatMul", ["pooled", "head"], ["logits"]), make("Softmax", ["logits"], [graph.probabilities])]
    if graph.attention is not None:
        nodes.append(make("Identity", ["received"], [graph.attention]))
    if graph.self_attention is not None:
        extra = {"BTT": [], "BHTT": [1], "BLHTT": [1, 2]}[graph.layout]
        if extra:
            nodes.append(make("Unsqueeze", ["weights", "layout_axes"], [graph.self_attention]))
        else:
            nodes.append(make("Identity", ["weights"], [graph.self_attention]))
    return nodes


def build(graph: TinyGraph) -> onnx.ModelProto:
    embedding, head = weights()
    seq: int | str = graph.fixed_length or "seq"
    inputs = [helper.make_tensor_value_info(graph.ids, graph.id_type, ["batch", seq])]
    if graph.mask is not None:
        inputs.append(helper.make_tensor_value_info(graph.mask, graph.id_type, ["batch", seq]))
    if graph.segments is not None:
        inputs.append(helper.make_tensor_value_info(graph.segments, graph.id_type, ["batch", seq]))
    outputs = [helper.make_tensor_value_info(graph.probabilities, TensorProto.FLOAT, ["batch", CLASSES])]
    if graph.attention is not None:
        outputs.append(helper.make_tensor_value_info(graph.attention, TensorProto.FLOAT, ["batch", seq]))
    if graph.self_attention is not None:
        shape = {"BTT": [], "BHTT": [1], "BLHTT": [1, 1]}[graph.layout]
        info = helper.make_tensor_value_info(graph.self_attention, TensorProto.FLOAT, ["batch", *shape, seq, seq])
        outputs.append(info)
    constants = {
        "embedding": embedding,
        "segment_embedding": segment_weights(),
        "head": head,
        "scale": np.array(1 / np.sqrt(WIDTH), np.float32),
        "one": np.array(1.0, np.float32),
        "neg": np.array(-1e9, np.float32),
        "axis1": np.array([1], np.int64),
        "axis2": np.array([2], np.int64),
        "layout_axes": np.array([1] if graph.layout == "BHTT" else [1, 2], np.int64),
    }
    nodes = _nodes(graph)
    used = {name for node in nodes for name in node.input}
    initializers = [numpy_helper.from_array(value, name) for name, value in constants.items() if name in used]
    body = helper.make_graph(nodes, "tiny", inputs, outputs, initializers)
    model = helper.make_model(body, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    return model


def pair_tokenizer() -> Tokenizer:
    """The bundled tokenizer with [CLS] and [SEP] and BERT's template: [CLS] a [SEP] for one text, [CLS] a [SEP] b
    [SEP] for a pair, the second text's tokens (and its [SEP]) in segment 1."""
    tokenizer = Tokenizer.from_file(str(BUNDLED / "tokenizer.json"))
    tokenizer.add_special_tokens(list(SPECIALS))
    cls, sep = (tokenizer.token_to_id(token) for token in SPECIALS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


def _io(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    def describe(value: onnx.ValueInfoProto) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return {"name": value.name, "dtype": dtype, "shape": [d.dim_param or d.dim_value for d in tensor.shape.dim]}

    return {"inputs": [describe(v) for v in model.graph.input], "outputs": [describe(v) for v in model.graph.output]}


def signature_of(graph: TinyGraph) -> dict[str, Any]:
    return {
        "inputs": {"token_ids": graph.ids, "mask": graph.mask, "segments": graph.segments},
        "outputs": {
            "probabilities": graph.probabilities,
            "attention": graph.attention,
            "self_attention": graph.self_attention,
        },
        "attention_source": "received" if graph.attention else None,
        "self_attention_layout": graph.layout,
        "attention_layers": ["tiny_attention"] if graph.self_attention else [],
        "pad_id": 0,
        "padding": "mask" if graph.mask else "none",
        "fixed_length": graph.fixed_length,
        "pairs": graph.segments is not None,
        "text": {"origin": "tokenizer"},
    }


def write_folder(
    root: Path, graph: TinyGraph, name: str = "tiny", version: int = 1, lean: bool = False, **fields: Any
) -> Path:
    """A complete version folder of the tiny graph, with the bundled tokenizer; ``fields`` override model.json.

    ``lean``: with a lean graph beside it (the same graph without its maps), as an import writes one."""
    folder = root / name / str(version)
    folder.mkdir(parents=True)
    model = build(graph)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    if lean:
        answers_only = build(dataclasses.replace(graph, self_attention=None))
        (folder / "model.lean.onnx").write_bytes(answers_only.SerializeToString())
    if graph.segments is None:
        shutil.copy(BUNDLED / "tokenizer.json", folder / "tokenizer.json")
    else:
        pair_tokenizer().save(str(folder / "tokenizer.json"))
    document = {
        "format": 1,
        "name": name,
        "version": version,
        "task": "text-classification",
        "labels": LABELS,
        "max_sequence_length": graph.fixed_length or 64,
        "vocab_size": VOCAB + (len(SPECIALS) if graph.segments else 0),
        **_io(model),
        "files": {
            "model": "model.onnx",
            "tokenizer": "tokenizer.json",
            **({"lean": "model.lean.onnx"} if lean else {}),
        },
        "signature": signature_of(graph),
        **fields,
    }
    document["sha256"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    (folder / "model.json").write_text(json.dumps(document))
    return folder


def bag_of_words(pushes: dict[int, tuple[int, float]]) -> onnx.ModelProto:
    """A classifier whose answer a test controls: the mean over the real tokens of each token's logits, then softmax.
    ``pushes``: token id → (class, logit); every other token is neutral. No attention outputs."""
    table = np.zeros((VOCAB, CLASSES), np.float32)
    for token, (label, value) in pushes.items():
        table[token, label] = value
    make = helper.make_node
    nodes = [
        make("Gather", ["table", "input_ids"], ["logits_each"]),
        make("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        make("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        make("Mul", ["logits_each", "mask3"], ["kept"]),
        make("ReduceSum", ["kept", "axis1"], ["total"], keepdims=0),
        make("ReduceSum", ["maskf", "axis1"], ["count"], keepdims=1),
        make("Div", ["total", "count"], ["logits"]),
        make("Softmax", ["logits"], ["probabilities"]),
    ]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")
    ]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", CLASSES])]
    constants = {"table": table, "axis1": np.array([1], np.int64), "axis2": np.array([2], np.int64)}
    initializers = [numpy_helper.from_array(value, name) for name, value in constants.items()]
    model = helper.make_model(
        helper.make_graph(nodes, "bag", inputs, outputs, initializers), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def write_bag_of_words(root: Path, pushes: dict[int, tuple[int, float]], name: str = "bag") -> Path:
    """A version folder of ``bag_of_words`` with the bundled tokenizer."""
    folder = root / name / "1"
    folder.mkdir(parents=True)
    model = bag_of_words(pushes)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    shutil.copy(BUNDLED / "tokenizer.json", folder / "tokenizer.json")
    signature = {
        "inputs": {"token_ids": "input_ids", "mask": "attention_mask"},
        "outputs": {"probabilities": "probabilities", "attention": None, "self_attention": None},
        "attention_source": None,
        "padding": "mask",
        "text": {"origin": "tokenizer"},
    }
    document = {
        "format": 1, "name": name, "version": 1, "labels": LABELS, "max_sequence_length": 64, "vocab_size": VOCAB,
        **_io(model), "files": {"model": "model.onnx", "tokenizer": "tokenizer.json"}, "signature": signature,
    }  # fmt: skip
    document["sha256"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    (folder / "model.json").write_text(json.dumps(document))
    return folder
