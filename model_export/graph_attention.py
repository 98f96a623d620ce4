"""Attention found in a converted graph, for models whose layers cannot be reached from Keras (a SavedModel: a TF
Hub or Model Garden BERT). An attention layer's probabilities are a ``Softmax`` over the keys, ``[B, H, T, T]``
(or ``[B, T, T]``): every such node, in graph order, is one layer's maps. They become the graph's ``self_attention``
output (``[B, L, H, T, T]``), and its per-token ``attention`` is read as the Keras route reads it: the first
position's row of the last layer when the prediction reads only that position (checked by changing the last
layer's other rows and seeing the prediction stay), else the attention each token receives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from model_export.onnx_edits import rename_inputs
from model_format.signature import ATTENTION, PROBABILITIES, SELF_ATTENTION, Signature

SUM_TOLERANCE = 1e-3
READ_TOLERANCE = 1e-6
PREFIX = "attention_serve_"


@dataclass(frozen=True)
class Found:
    """The attention softmaxes of a graph (output names, in graph order), their heads, whether it reads [CLS]."""

    maps: tuple[str, ...]
    heads: int
    reads_first: bool


def find(proto: onnx.ModelProto, probes: Sequence[Mapping[str, np.ndarray]], signature: Signature) -> Found | None:
    """The softmaxes whose outputs are attention over the tokens at every probe length; None if there are none."""
    names = [node.output[0] for node in proto.graph.node if node.op_type == "Softmax"]
    if not names:
        return None
    with_outputs = _exposed(proto, names)
    session = ort.InferenceSession(with_outputs.SerializeToString(), providers=["CPUExecutionProvider"])
    maps = [name for name in names if all(_is_map(session, probe, signature, name) for probe in probes)]
    if not maps:
        return None
    shape = session.run([maps[0]], dict(probes[0]))[0].shape
    heads = 1 if len(shape) == 3 else int(shape[1])
    return Found(tuple(maps), heads, _reads_first(proto, maps[-1], probes[-1], signature))


def add_outputs(proto: onnx.ModelProto, found: Found, signature: Signature) -> None:
    """``self_attention`` ``[B, L, H, T, T]`` and per-token ``attention`` ``[B, T]`` (0 on padding, 1 in all)."""
    graph = proto.graph
    nodes: list[onnx.NodeProto] = []
    axis = _constant(graph, "axis_1", [1])
    with_heads, layers = [], []
    for index, name in enumerate(found.maps):
        heads = name if found.heads > 1 else _node(nodes, "Unsqueeze", [name, axis], f"heads_{index}")
        with_heads.append(heads)
        layers.append(_node(nodes, "Unsqueeze", [heads, axis], f"layer_{index}"))
    nodes.append(helper.make_node("Concat", layers, [SELF_ATTENTION], axis=1))
    mean = _node(nodes, "ReduceMean", [with_heads[-1]], "mean", axes=[1], keepdims=0)  # [B, T, T]
    real = _node(nodes, "Cast", [signature.mask or signature.token_ids], "real", to=onnx.TensorProto.FLOAT)
    if found.reads_first:
        row = _node(nodes, "Gather", [mean, _constant(graph, "zero", 0)], "first_row", axis=1)
    else:
        queries = _node(nodes, "Unsqueeze", [real, axis], "queries")
        row = _node(nodes, "Squeeze", [_node(nodes, "MatMul", [queries, mean], "received"), axis], "received_row")
    kept = _node(nodes, "Mul", [row, real], "kept")
    total = _node(nodes, "ReduceSum", [kept, _constant(graph, "axis_last", [-1])], "total", keepdims=1)
    floor = _node(nodes, "Max", [total, _constant(graph, "tiny", np.float32(1e-12))], "floor")
    nodes.append(helper.make_node("Div", [kept, floor], [ATTENTION]))
    graph.node.extend(nodes)
    shape = ["batch", len(found.maps), found.heads, "seq", "seq"]
    graph.output.extend([
        helper.make_tensor_value_info(SELF_ATTENTION, onnx.TensorProto.FLOAT, shape),
        helper.make_tensor_value_info(ATTENTION, onnx.TensorProto.FLOAT, ["batch", "seq"]),
    ])  # fmt: skip


def _is_map(session: ort.InferenceSession, probe: Mapping[str, np.ndarray], signature: Signature, name: str) -> bool:
    (values,) = session.run([name], dict(probe))
    length = probe[signature.token_ids].shape[1]
    if values.ndim not in (3, 4) or values.shape[-1] != length or values.shape[-2] != length:
        return False
    return bool(values.min() >= -1e-6 and np.all(np.abs(values.sum(-1) - 1) < SUM_TOLERANCE))


def _reads_first(proto: onnx.ModelProto, last: str, probe: Mapping[str, np.ndarray], signature: Signature) -> bool:
    """Whether the prediction stays the same when every row of the last map but the first one is changed."""
    plain = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = plain.run([signature.outputs[PROBABILITIES]], dict(probe))
    changed = onnx.ModelProto()
    changed.CopyFrom(proto)
    graph = changed.graph
    nodes: list[onnx.NodeProto] = []
    rows = _constant(graph, "query_axis", [-2])
    start, first_end = _constant(graph, "start", [0]), _constant(graph, "one", [1])
    head = _node(nodes, "Slice", [last, start, first_end, rows], "head")
    tail = _node(nodes, "Slice", [last, first_end, _constant(graph, "end", [2**62]), rows], "tail")
    halved = _node(nodes, "Mul", [tail, _constant(graph, "half", np.float32(0.5))], "halved")
    moved = _node(nodes, "Add", [halved, _constant(graph, "bump", np.float32(0.1))], "moved")
    replaced = _node(nodes, "Concat", [head, moved], "replaced", axis=-2)
    rename_inputs(graph, {last: replaced})
    for output in graph.output:
        if output.name == last:
            return False  # the map itself is an output: nothing to learn
    position = next(i for i, node in enumerate(graph.node) if last in node.output) + 1
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    session = ort.InferenceSession(changed.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run([signature.outputs[PROBABILITIES]], dict(probe))
    return bool(np.max(np.abs(got - expected)) <= READ_TOLERANCE)


def _exposed(proto: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    copy.graph.output.extend([helper.make_empty_tensor_value_info(name) for name in names])
    return copy


def _node(nodes: list[onnx.NodeProto], op: str, inputs: Sequence[str], name: str, **attributes: object) -> str:
    output = f"{PREFIX}{name}"
    nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attributes))
    return output


def _constant(graph: onnx.GraphProto, name: str, value: object) -> str:
    full = f"{PREFIX}{name}"
    if not any(tensor.name == full for tensor in graph.initializer):
        array = np.asarray(value)
        array = array.astype(np.int64) if array.dtype.kind == "i" else array
        graph.initializer.append(onnx.numpy_helper.from_array(array, full))
    return full
