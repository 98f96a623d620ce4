"""Export the Keras classifier to ONNX with tf2onnx, check the graph, and prove parity with Keras."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from model_export.model import AttentionClassifier
from model_export.tokenization import PAD_ID

OPSET = 17
PARITY_TOLERANCE = 1e-4
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("probabilities", "attention", "self_attention")
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})


class ExportError(RuntimeError):
    """The exported graph is invalid, non-standard, or disagrees with Keras."""


@dataclass(frozen=True)
class Parity:
    """Largest absolute difference between Keras and ONNX Runtime, per output and overall."""

    max_abs_diff: float
    per_output: dict[str, float]
    cases: int


def export_onnx(model: AttentionClassifier, opset: int = OPSET) -> onnx.ModelProto:
    """Convert through a ``tf.function`` returning a dict, so the output names are ours."""
    spec = [tf.TensorSpec((None, None), tf.int32, name=name) for name in INPUT_NAMES]

    @tf.function(input_signature=spec)
    def serve(input_ids: tf.Tensor, attention_mask: tf.Tensor) -> dict[str, tf.Tensor]:
        return model({"input_ids": input_ids, "attention_mask": attention_mask}, training=False)  # type: ignore[no-any-return]

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    _name_dynamic_axes(proto)
    _drop_unused_opsets(proto)
    proto.producer_name = "attention-serve model_export"
    check_graph(proto)
    return proto


def _name_dynamic_axes(proto: onnx.ModelProto) -> None:
    """tf2onnx names dynamic axes ``unk__N``: call them ``batch`` and ``seq`` (last two of self_attention)."""
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        seq_axes = {1} if len(dims) == 2 else {len(dims) - 2, len(dims) - 1}
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value"):
                continue
            dim.dim_param = "batch" if axis == 0 else "seq" if axis in seq_axes else f"axis{axis}"


def _drop_unused_opsets(proto: onnx.ModelProto) -> None:
    """tf2onnx imports ``ai.onnx.ml`` whether or not a node uses it; keep only the domains in use."""
    used = {node.domain for node in proto.graph.node} | {""}
    kept = [op for op in proto.opset_import if op.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)


def check_graph(proto: onnx.ModelProto) -> None:
    """``onnx.checker`` plus: standard op domains only, the expected inputs and outputs."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the graph: {exc}") from exc
    domains = {op.domain for op in proto.opset_import} | {node.domain for node in proto.graph.node}
    if not domains <= STANDARD_DOMAINS:
        raise ExportError(f"non-standard op domains in the graph: {sorted(domains - STANDARD_DOMAINS)}")
    inputs = tuple(value.name for value in proto.graph.input)
    outputs = tuple(value.name for value in proto.graph.output)
    if inputs != INPUT_NAMES or set(outputs) != set(OUTPUT_NAMES):
        raise ExportError(f"unexpected graph signature: inputs {inputs}, outputs {outputs}")


def verify_parity(
    model: AttentionClassifier,
    onnx_bytes: bytes,
    real: Sequence[tuple[np.ndarray, np.ndarray]],
    seed: int = 0,
    tolerance: float = PARITY_TOLERANCE,
) -> Parity:
    """Compare every output on random and real inputs of several batch sizes and lengths; raise past tolerance."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    cases = [*random_inputs(model.config.vocab_size, model.config.max_len, seed), *real]
    for ids, mask in cases:
        expected = model({"input_ids": ids, "attention_mask": mask}, training=False)
        fetched = session.run(list(OUTPUT_NAMES), {"input_ids": ids, "attention_mask": mask})
        got = dict(zip(OUTPUT_NAMES, fetched, strict=True))
        for name in OUTPUT_NAMES:
            diff = float(np.max(np.abs(np.asarray(expected[name]) - got[name])))
            worst[name] = max(worst[name], diff)
    parity = Parity(max(worst.values()), worst, len(cases))
    if not parity.max_abs_diff <= tolerance:
        raise ExportError(f"ONNX and Keras disagree: max abs difference {parity.max_abs_diff:.3g} > {tolerance}")
    return parity


def random_inputs(vocab_size: int, max_len: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random ids with right padding, for shapes from one token up to the maximum length."""
    rng = np.random.default_rng(seed)
    shapes = [(1, 1), (1, 7), (3, 16), (8, 33), (2, max_len), (16, min(64, max_len))]
    cases = []
    for batch, length in shapes:
        ids = rng.integers(2, vocab_size, size=(batch, length), dtype=np.int32)
        lengths = rng.integers(1, length + 1, size=batch)
        lengths[0] = length
        mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
        cases.append((np.where(mask == 1, ids, PAD_ID).astype(np.int32), mask))
    return cases


def graph_io(proto: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """Names, dtypes and shapes (a name for a dynamic axis) of the graph's inputs and outputs."""

    def describe(value: onnx.ValueInfoProto) -> dict[str, Any]:
        tensor = value.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        return {
            "name": value.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
            "shape": shape,
        }

    return {"inputs": [describe(v) for v in proto.graph.input], "outputs": [describe(v) for v in proto.graph.output]}
