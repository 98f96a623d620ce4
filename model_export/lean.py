"""The lean graph of a version: the same model for answers only, with ONNX Runtime's fused transformer kernels.

The explaining graph (``model.onnx``) hands out every attention map, so its attention cannot use ONNX Runtime's fused
``Attention`` kernel (which keeps its probabilities to itself), and tf2onnx writes Keras' ``LayerNormalization`` as a
dozen element-wise nodes (``GlobalAveragePool`` moments) that none of ONNX Runtime's fusions recognise. The lean graph
is converted again from the same Keras model with the boundaries of those layers marked, then rewritten:

- every ``LayerNormalization`` (not RMS) → ONNX's own ``LayerNormalization`` node (ONNX Runtime then fuses the
  residual ``Add`` into ``SkipLayerNormalization``);
- every Keras ``MultiHeadAttention`` whose maps are not needed → ``com.microsoft.Attention`` (one packed Q/K/V
  projection, the padding mask as its ``mask_index``) and the output projection. The last layer stays as it is when
  the per-token attention is read from its maps (``cls``, ``received``), so answers keep their attention.

It outputs ``probabilities`` and, where the version has it, ``attention`` — never ``self_attention``. Each kind of
rewrite is kept only if the lean graph answers as the explaining one does (≤ 1e-4 on random and real inputs); the
record says which applied and why not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
from onnx import helper

from model_export.export import Feeds, check_graph, convert, verify_parity
from model_export.graph import Imported, forward
from model_export.onnx_edits import rename_inputs
from model_format.document import LEAN_FILE
from model_format.signature import ATTENTION, PROBABILITIES, SELF_ATTENTION, Signature

MICROSOFT = "com.microsoft"
PREFIX = "lean_"


@dataclass(frozen=True)
class Mark:
    """One call of a layer to fuse: what kind, the layer, its input and output tensors' names in the graph."""

    kind: str  # "norm" or "attention"
    layer: keras.layers.Layer
    input: str
    output: str
    ordinal: int


@dataclass
class Lean:
    """The lean graph's bytes (None when no rewrite applied), which rewrites applied, its parity with the
    explaining graph, and why a rewrite was left out."""

    onnx_bytes: bytes | None
    fused: dict[str, int] = field(default_factory=dict)
    parity: float | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """The ``lean`` record of ``model.json``."""
        return {
            "file": LEAN_FILE if self.onnx_bytes is not None else None,
            "fused": self.fused,
            "parity_with_explaining": self.parity,
            "notes": self.notes,
        }


def build_lean(imported: Imported, explaining: bytes, cases: Sequence[Feeds]) -> Lean:
    """Convert and rewrite; keep the richest rewrite that keeps parity with ``explaining`` on ``cases``."""
    if imported.source.keras_model is None:
        return Lean(None, notes=["a SavedModel: no Keras layers to mark"])
    session = ort.InferenceSession(explaining, providers=["CPUExecutionProvider"])
    roles = [role for role in (PROBABILITIES, ATTENTION) if role in imported.signature.outputs]
    names = [imported.signature.outputs[role] for role in roles]

    def reference(call: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, dict(call)), strict=True))

    notes: list[str] = []
    for kinds in (("norm", "attention", "dense"), ("norm", "dense"), ("norm",)):
        proto, marks = _convert(imported)
        fused = _rewrite(proto, marks, set(kinds), imported)
        if not any(fused.values()):
            notes.append(f"nothing to fuse ({', '.join(kinds)})")
            continue
        proto, optimizer = _optimized(proto, notes)
        data = proto.SerializeToString()
        try:
            parity = verify_parity(reference, data, cases)
        except Exception as exc:  # a rewrite that changes answers (or that ONNX Runtime refuses) is dropped
            notes.append(f"fusing {' and '.join(kinds)} changed the answers: {str(exc)[:160]}")
            continue
        return Lean(data, fused | optimizer, parity.max_abs_diff, notes)
    return Lean(None, notes=notes)


def _optimized(proto: onnx.ModelProto, notes: list[str]) -> tuple[onnx.ModelProto, dict[str, int]]:
    """ONNX Runtime's transformer optimizer over the rewritten graph: with our layer norms and attention in place,
    its patterns match (residual + LayerNorm → ``SkipLayerNormalization``, bias + GELU → ``FastGelu``/``BiasGelu``,
    ...). Offline fusions only (``opt_level=0``): ONNX Runtime applies its own graph optimizations at load. The
    fusions it made, by operator; none where it fails (the rewritten graph is kept, the note says why)."""
    from onnxruntime.transformers.optimizer import optimize_model

    level = logging.getLogger("onnxruntime.transformers").level
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)  # "producer not matched" and the like
    try:
        optimized = optimize_model(proto, model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    except Exception as exc:  # the optimizer is a tool of heuristics: any failure leaves our rewrite as it is
        notes.append(f"ONNX Runtime's transformer optimizer failed: {type(exc).__name__}: {str(exc)[:120]}")
        return proto, {}
    finally:
        logging.getLogger("onnxruntime.transformers").setLevel(level)
    stats = optimized.get_fused_operator_statistics()
    ours = ("Attention", "LayerNormalization")  # counted by the rewrite (the optimizer recounts what is left)
    return optimized.model, {f"optimizer {op}": n for op, n in stats.items() if n and op not in ours}


def _convert(imported: Imported) -> tuple[onnx.ModelProto, list[Mark]]:
    """The model converted again, answering only, with its norm and attention calls' boundaries recorded."""
    layers = imported.source.layers()
    norms = [layer for layer in layers if _plain_norm(layer)]
    attentions = [layer for layer in layers if type(layer) is keras.layers.MultiHeadAttention]
    marks: list[Mark] = []

    def lean(inputs: dict[str, tf.Tensor], weights: Any) -> dict[str, tf.Tensor]:
        marks.clear()  # tracing may run the function more than once
        with _marking(norms, attentions, marks):
            return forward(imported, inputs, weights, maps=False)

    proto = convert(lean, lean_signature(imported.signature), weights=imported.source.variables)
    return proto, list(marks)


def lean_signature(signature: Signature) -> Signature:
    """The lean graph's signature: the explaining one's, without ``self_attention``."""
    outputs = {role: name for role, name in signature.outputs.items() if role != SELF_ATTENTION}
    return dataclasses.replace(signature, outputs=outputs)


def _plain_norm(layer: keras.layers.Layer) -> bool:
    if not isinstance(layer, keras.layers.LayerNormalization):
        return False
    config = layer.get_config()
    axis = config.get("axis")
    return not config.get("rms_scaling", False) and axis in (-1, [-1])


@contextlib.contextmanager
def _marking(
    norms: Sequence[keras.layers.Layer], attentions: Sequence[keras.layers.Layer], marks: list[Mark]
) -> Iterator[None]:
    """Record each call's first input and output tensor names (inside the traced function) for the rewrite."""
    patched: list[tuple[keras.layers.Layer, Any]] = []
    counts: dict[int, int] = {}
    try:
        for kind, layers in (("norm", norms), ("attention", attentions)):
            for layer in layers:
                own = vars(layer).get("call")
                original = own or type(layer).call.__get__(layer)
                layer.call = _marker(kind, layer, original, marks, counts)
                patched.append((layer, own))
        yield
    finally:
        for layer, own in reversed(patched):
            if own is None:
                del layer.call
            else:
                layer.call = own


def _marker(kind: str, layer: keras.layers.Layer, original: Any, marks: list[Mark], counts: dict[int, int]) -> Any:
    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        outputs = original(*args, **kwargs)
        first = args[0] if args else kwargs.get("inputs", kwargs.get("query"))
        main = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        ordinal = counts.get(id(layer), 0)
        counts[id(layer)] = ordinal + 1
        value = args[1] if len(args) > 1 else kwargs.get("value")
        key = kwargs.get("key")
        same = kind == "norm" or (value is first and (key is None or key is first))
        if same and hasattr(first, "name") and hasattr(main, "name"):
            marks.append(Mark(kind, layer, first.name, main.name, ordinal))
        return outputs

    return call


def _rewrite(proto: onnx.ModelProto, marks: Sequence[Mark], kinds: set[str], imported: Imported) -> dict[str, int]:
    graph = proto.graph
    produced = {output for node in graph.node for output in node.output} | {i.name for i in graph.input}
    keep_last = _kept_attention(imported)
    fused = {"LayerNormalization": 0, "Attention": 0, "MatMul": 0}
    mask = imported.signature.mask
    renamed: dict[str, str] = {}  # a fused node's output replaces a tensor a later mark may name as its input
    for mark in marks:
        if mark.input not in produced or mark.output not in produced or mark.kind not in kinds:
            continue
        source = renamed.get(mark.input, mark.input)
        if mark.kind == "norm":
            nodes, tensors = _norm(mark, source)
            fused["LayerNormalization"] += 1
        else:
            if keep_last is not None and (id(mark.layer), mark.ordinal) == keep_last:
                continue
            nodes, tensors = _attention(mark, source, mask)
            fused["Attention"] += 1
        renamed[mark.output] = _replace(graph, mark.output, nodes, tensors)
    if "dense" in kinds:
        fused["MatMul"] = _dense_on_sequences(graph)
    if fused["Attention"]:
        proto.opset_import.append(helper.make_opsetid(MICROSOFT, 1))
    _prune(proto)
    check_graph(proto, lean_signature(imported.signature), contrib=True)
    return fused


def _kept_attention(imported: Imported) -> tuple[int, int] | None:
    """The attention call whose maps the per-token attention is read from (left unfused), as (layer, ordinal)."""
    plan = imported.plan
    if plan.pooling is not None or not plan.maps or ATTENTION not in imported.signature.outputs:
        return None
    last = plan.maps[-1]
    return (id(last.layer), last.ordinal) if last.layer is not None else None


def _dense_on_sequences(graph: onnx.GraphProto) -> int:
    """tf2onnx writes a Dense layer on ``[B, T, D]`` as ``Reshape`` to ``[B·T, D]`` → ``MatMul`` → ``Reshape`` back
    to a shape computed at run time, which hides the sequence's shape from ONNX Runtime's fusions (bias + GELU,
    bias + residual + LayerNorm). A ``MatMul`` broadcasts over the batch and sequence axes by itself: use it alone."""
    producers = {output: node for node in graph.node for output in node.output}
    constants = {tensor.name: tensor for tensor in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    count = 0
    for matmul in [node for node in graph.node if node.op_type == "MatMul"]:
        flatten = producers.get(matmul.input[0])
        after = consumers.get(matmul.output[0], [])
        if flatten is None or flatten.op_type != "Reshape" or len(after) != 1 or after[0].op_type != "Reshape":
            continue
        shape = constants.get(flatten.input[1])
        weight = constants.get(matmul.input[1])
        if shape is None or weight is None or len(weight.dims) != 2 or len(consumers.get(flatten.output[0], [])) != 1:
            continue
        target = onnx.numpy_helper.to_array(shape)
        if target.shape != (2,) or int(target[0]) != -1 or int(target[1]) != weight.dims[0]:
            continue
        matmul.input[0] = flatten.input[0]
        matmul.output[0] = after[0].output[0]
        after[0].output[0] = f"{after[0].output[0]}__unused"
        count += 1
    return count


def _norm(mark: Mark, source: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    layer = mark.layer
    width = int(layer.gamma.shape[0]) if layer.gamma is not None else int(layer.beta.shape[0])
    gamma = np.asarray(layer.gamma, np.float32) if layer.gamma is not None else np.ones(width, np.float32)
    beta = np.asarray(layer.beta, np.float32) if layer.beta is not None else np.zeros(width, np.float32)
    name = f"{PREFIX}{_safe(layer.path)}_{mark.ordinal}"
    tensors = [onnx.numpy_helper.from_array(gamma, f"{name}_gamma"), onnx.numpy_helper.from_array(beta, f"{name}_beta")]
    node = helper.make_node(
        "LayerNormalization", [source, f"{name}_gamma", f"{name}_beta"], [f"{name}_out"], name=name,
        axis=-1, epsilon=float(layer.epsilon),
    )  # fmt: skip
    return [node], tensors


def _attention(mark: Mark, source: str, mask: str | None) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    layer = mark.layer
    heads, key_dim = int(layer._num_heads), int(layer._key_dim)
    dense = [layer._query_dense, layer._key_dense, layer._value_dense]
    width = int(dense[0].kernel.shape[0])
    kernels = [np.asarray(d.kernel, np.float32).reshape(width, -1) for d in dense]
    biases = [
        np.asarray(d.bias, np.float32).reshape(-1) if d.bias is not None else np.zeros(k.shape[1], np.float32)
        for d, k in zip(dense, kernels, strict=True)
    ]
    output = layer._output_dense
    out_kernel = np.asarray(output.kernel, np.float32).reshape(-1, np.asarray(output.kernel).shape[-1])
    out_bias = (
        np.asarray(output.bias, np.float32) if output.bias is not None else np.zeros(out_kernel.shape[1], np.float32)
    )
    name = f"{PREFIX}{_safe(layer.path)}_{mark.ordinal}"
    tensors = [
        onnx.numpy_helper.from_array(np.concatenate(kernels, axis=1), f"{name}_qkv_kernel"),
        onnx.numpy_helper.from_array(np.concatenate(biases), f"{name}_qkv_bias"),
        onnx.numpy_helper.from_array(out_kernel, f"{name}_out_kernel"),
        onnx.numpy_helper.from_array(out_bias, f"{name}_out_bias"),
    ]
    inputs = [source, f"{name}_qkv_kernel", f"{name}_qkv_bias", *([mask] if mask else [])]
    sizes = [k.shape[1] for k in kernels]
    options: dict[str, Any] = {"num_heads": heads}
    if len(set(sizes)) > 1:  # Q, K, V of different widths (ONNX Runtime's quantizer leaves such a node in FP32)
        options["qkv_hidden_sizes"] = sizes
    if sizes[0] != heads * key_dim:  # the kernel's default scale is 1/√(width / heads)
        options["scale"] = float(1.0 / np.sqrt(key_dim))
    attention = helper.make_node(
        "Attention", inputs, [f"{name}_context"], name=f"{name}_attention", domain=MICROSOFT, **options
    )
    project = helper.make_node(
        "MatMul", [f"{name}_context", f"{name}_out_kernel"], [f"{name}_projected"], name=f"{name}_project"
    )
    bias = helper.make_node("Add", [f"{name}_projected", f"{name}_out_bias"], [f"{name}_out"], name=f"{name}_bias")
    return [attention, project, bias], tensors


def _replace(graph: onnx.GraphProto, old: str, nodes: list[onnx.NodeProto], tensors: list[onnx.TensorProto]) -> str:
    """The fused nodes produce a new tensor (returned); everything that read ``old`` reads it (the old nodes go
    dead)."""
    new = nodes[-1].output[0]
    rename_inputs(graph, {old: new})
    for output in graph.output:
        if output.name == old:
            nodes.append(helper.make_node("Identity", [new], [old]))
    graph.node.extend(nodes)
    graph.initializer.extend(tensors)
    _sort(graph)
    return new


def _sort(graph: onnx.GraphProto) -> None:
    """Nodes in topological order (the fused ones were appended at the end)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        progressed = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                progressed.append(node)
        if len(progressed) == len(pending):
            raise ValueError("the rewritten graph has a cycle or a missing input")
        pending = progressed
    del graph.node[:]
    graph.node.extend(ordered)


def _prune(proto: onnx.ModelProto) -> None:
    """Drop the nodes no output depends on any more, then the initializers no node reads."""
    graph = proto.graph
    producers = {output: node for node in graph.node for output in node.output}
    needed: set[str] = set()
    stack = [output.name for output in graph.output]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producers.get(name)
        if node is not None:
            stack.extend(node.input)
    kept = [node for node in graph.node if any(output in needed for output in node.output)]
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    initializers = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _safe(path: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in path)
