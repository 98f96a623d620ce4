"""Convert a ``tf.function`` to ONNX with tf2onnx, check the graph against its signature, prove parity.

``train`` and ``import`` share every step here: the conversion (opset 17, named dynamic axes, standard domains
only), ``check_graph``, ``graph_io`` for ``model.json`` and the parity gate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from model_export import tf_ops  # registers the conversions tf2onnx lacks (exact GELU's Erfc)
from model_export.feeds import Feeds, random_cases
from model_export.model import AttentionClassifier
from model_export.onnx_edits import rename_inputs
from model_export.tokenization import PAD_ID
from model_format.signature import Signature, read_signature, trained_signature

OPSET = 17
HANDLERS = tf_ops.HANDLED  # imported for its registration; the ops it converts
PARITY_TOLERANCE = 1e-4
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
CONTRIB_DOMAIN = "com.microsoft"  # ONNX Runtime's own kernels, in lean graphs only
Reference = Callable[[Feeds], Mapping[str, np.ndarray]]
Graph = Callable[[dict[str, tf.Tensor], Any], dict[str, tf.Tensor]]
WEIGHT = "attention_serve_weight_"
SHARED_MINIMUM = 1024  # bytes: smaller constants (shapes, scalars) are left as they are


class ExportError(RuntimeError):
    """The exported graph is invalid, non-standard, or disagrees with Keras."""


@dataclass(frozen=True)
class Parity:
    """Largest absolute difference between Keras and ONNX Runtime, per output and overall."""

    max_abs_diff: float
    per_output: dict[str, float]
    cases: int


def input_specs(signature: Signature) -> list[tf.TensorSpec]:
    """int32 ``[batch, seq]`` (``seq`` fixed where the signature says so) for each graph input, in order:
    token ids, mask, segment ids."""
    return [tf.TensorSpec((None, signature.fixed_length), tf.int32, name=name) for name in signature.input_names]


def convert(function: Graph, signature: Signature, opset: int = OPSET, weights: Sequence[Any] = ()) -> onnx.ModelProto:
    """Convert ``function`` (the graph inputs by name and the weights' tensors in, a dict of named outputs back) and
    check the result.

    ``weights`` (a Keras model's variables): passed to ``function`` as inputs, so tf2onnx converts a graph in which
    they are tensors, not constants, and they become the ONNX graph's initializers afterwards, each once. Frozen
    into constants instead, tf2onnx copied them many times over: a DistilBERT of BERT-base size took 20 GB of memory
    and 110 s to convert and wrote a file 16% larger than its weights; this way 3 GB, 8 s and exactly their size.
    """
    names = signature.input_names
    specs = input_specs(signature)
    weight_specs = [tf.TensorSpec(w.shape, w.dtype, name=f"{WEIGHT}{i}") for i, w in enumerate(weights)]

    def graph(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        return function(dict(zip(names, args[: len(names)], strict=True)), list(args[len(names) :]) or None)

    traced = tf.function(graph, input_signature=specs + weight_specs)
    try:
        proto, _ = tf2onnx.convert.from_function(traced, input_signature=specs + weight_specs, opset=opset)
    except Exception as exc:  # tf2onnx raises bare exceptions of many types for graphs it cannot convert
        raise ExportError(f"tf2onnx could not convert the model: {type(exc).__name__}: {exc}"[:500]) from exc
    if weights:
        _weights_as_initializers(proto, weights)
    store_once(proto)
    _name_dynamic_axes(proto)
    _drop_unused_opsets(proto)
    proto.producer_name = "attention-serve model_export"
    check_graph(proto, signature)
    return proto


def store_once(proto: onnx.ModelProto) -> None:
    """Keep one initializer per distinct content: a frozen conversion (a SavedModel's) stores a weight again for
    every layout tf2onnx folded it into; an exact copy is dropped, a copy in another shape becomes a ``Reshape`` of
    the one kept (ONNX Runtime folds it at load)."""
    graph = proto.graph
    kept: dict[tuple[int, bytes], onnx.TensorProto] = {}
    renamed: dict[str, str] = {}
    reshapes: list[onnx.NodeProto] = []
    unique: list[onnx.TensorProto] = []
    for tensor in graph.initializer:
        key = (tensor.data_type, onnx.numpy_helper.to_array(tensor).tobytes())
        first = kept.setdefault(key, tensor)
        if first is tensor or len(key[1]) < SHARED_MINIMUM:
            unique.append(tensor)
        elif list(first.dims) == list(tensor.dims):
            renamed[tensor.name] = first.name
        else:
            shape = onnx.numpy_helper.from_array(np.asarray(tensor.dims, np.int64), f"{tensor.name}__shape")
            unique.append(shape)
            reshapes.append(onnx.helper.make_node("Reshape", [first.name, shape.name], [tensor.name]))
    if not renamed and not reshapes:
        return
    del graph.initializer[:]
    graph.initializer.extend(unique)
    rename_inputs(graph, renamed)
    nodes = [*reshapes, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)


def _weights_as_initializers(proto: onnx.ModelProto, weights: Sequence[Any]) -> None:
    """The weight inputs become initializers named by their variables' paths; ones no node reads are dropped."""
    graph = proto.graph
    used = {name for node in graph.node for name in node.input}
    renamed: dict[str, str] = {}
    for index, weight in enumerate(weights):
        placeholder = f"{WEIGHT}{index}"
        if placeholder not in used:
            continue
        name = str(getattr(weight, "path", "") or placeholder)
        name = name if name not in renamed.values() else f"{name}_{index}"
        renamed[placeholder] = name
        graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(weight), name))
    kept = [value for value in graph.input if not value.name.startswith(WEIGHT)]
    del graph.input[:]
    graph.input.extend(kept)
    rename_inputs(graph, renamed)


def signature_of(model: AttentionClassifier) -> Signature:
    """The signature of a classifier ``train`` built: its encoder blocks are the attention layers."""
    return trained_signature(tuple(block.name for block in model.blocks), PAD_ID)


def export_onnx(model: AttentionClassifier, opset: int = OPSET) -> onnx.ModelProto:
    """The trained classifier's graph: ids and mask in; probabilities, attention and self-attention out."""
    signature = signature_of(model)

    def serve(inputs: dict[str, tf.Tensor], weights: Any) -> dict[str, tf.Tensor]:
        return model(inputs, training=False)  # type: ignore[no-any-return]

    return convert(serve, signature, opset)


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


def check_graph(proto: onnx.ModelProto, signature: Signature | None = None, contrib: bool = False) -> None:
    """``onnx.checker`` plus: standard op domains only (and ONNX Runtime's ``com.microsoft`` where ``contrib``: a
    lean graph's fused kernels), exactly the inputs and outputs the signature names.

    Without a signature the graph must be what ``train`` has always written (a folder from before signatures).
    """
    try:
        onnx.checker.check_model(proto, full_check=not contrib)  # the checker cannot infer contrib ops' shapes
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the graph: {exc}") from exc
    domains = {op.domain for op in proto.opset_import} | {node.domain for node in proto.graph.node}
    allowed = STANDARD_DOMAINS | ({CONTRIB_DOMAIN} if contrib else set())
    if not domains <= allowed:
        raise ExportError(f"non-standard op domains in the graph: {sorted(domains - allowed)}")
    inputs = [value.name for value in proto.graph.input]
    outputs = [value.name for value in proto.graph.output]
    if signature is None:
        signature = read_signature({}, outputs)
        if "self_attention" not in outputs:  # train has always written self_attention
            raise ExportError(f"unexpected graph signature: inputs {inputs}, outputs {outputs}")
    if inputs != signature.input_names or set(outputs) != set(signature.outputs.values()):
        raise ExportError(
            f"unexpected graph signature: inputs {inputs}, outputs {outputs}; the signature names "
            f"{signature.input_names} → {sorted(signature.outputs.values())}"
        )


def verify_parity(
    reference: Reference, onnx_bytes: bytes, cases: Sequence[Feeds], tolerance: float = PARITY_TOLERANCE
) -> Parity:
    """Compare every output the reference gives with ONNX Runtime's on each case; raise past ``tolerance``."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    worst: dict[str, float] = {}
    for feeds in cases:
        expected = reference(feeds)
        got = dict(zip(expected, session.run(list(expected), feeds), strict=True))
        for name, value in expected.items():
            diff = float(np.max(np.abs(np.asarray(value) - got[name]))) if np.size(value) else 0.0
            worst[name] = max(worst.get(name, 0.0), diff)
    parity = Parity(max(worst.values(), default=0.0), worst, len(cases))
    if not parity.max_abs_diff <= tolerance:
        raise ExportError(
            f"ONNX and Keras disagree: max abs difference {parity.max_abs_diff:.3g} > {tolerance} "
            f"({', '.join(f'{k} {v:.3g}' for k, v in worst.items())})"
        )
    return parity


def trained_parity(model: AttentionClassifier, onnx_bytes: bytes, real: Sequence[Feeds], seed: int = 0) -> Parity:
    """Parity of the trained classifier on random inputs of several shapes and on ``real`` batches."""
    signature = signature_of(model)

    def reference(feeds: Feeds) -> dict[str, np.ndarray]:
        outputs = model(dict(feeds), training=False)
        return {name: np.asarray(value) for name, value in outputs.items()}

    cases = [*random_cases(signature, model.config.vocab_size, model.config.max_len, seed), *real]
    return verify_parity(reference, onnx_bytes, cases)


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
