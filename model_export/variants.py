"""Optimized variants of an exported graph: ORT-optimized, INT8 dynamic quantization (CPU), FP16 (GPU).

Each variant is scored on the test split against the FP32 graph, and the deltas go into ``model.json``. Where the
version has a lean graph (``model_export.lean``), INT8 and FP16 get a lean twin made the same way from it
(``model.int8.lean.onnx``: its fused attention quantized too), compared with the FP32 graph the same way.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16

from model_export.feeds import Feeds, predict
from model_export.scoring import score
from model_format.signature import PROBABILITIES

log = logging.getLogger(__name__)
VARIANT_FILES = {"optimized": "model.optimized.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
LEAN_VARIANT_FILES = {"int8": "model.int8.lean.onnx", "fp16": "model.fp16.lean.onnx"}


def optimize(onnx_bytes: bytes) -> bytes:
    """ONNX Runtime's extended graph optimizations, saved (may use ``com.microsoft`` fused ops)."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        return target.read_bytes()


def quantize_int8(onnx_bytes: bytes, per_channel: bool = False) -> bytes:
    """Dynamic INT8 quantization of the MatMul, fused Attention and embedding weights (activations quantized at run
    time; ``per_channel``: a scale per output channel of each weight, not one per tensor). A fused node's output has
    no type ONNX's shape inference knows: float, as every activation here."""
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(onnx_bytes)
        quantize_dynamic(
            source, target, op_types_to_quantize=["MatMul", "Attention", "Gather"], weight_type=QuantType.QInt8,
            per_channel=per_channel, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )  # fmt: skip
        return target.read_bytes()


def convert_fp16(onnx_bytes: bytes) -> bytes:
    """FP16 weights and compute, FP32 inputs and outputs kept so callers see no difference."""
    model = convert_float_to_float16(onnx.load_from_string(onnx_bytes), keep_io_types=True)
    return bytes(model.SerializeToString())


BUILDERS: dict[str, Callable[[bytes], bytes]] = {"optimized": optimize, "int8": quantize_int8, "fp16": convert_fp16}


def build_variants(
    onnx_bytes: bytes,
    kinds: Sequence[str],
    calls: Sequence[Feeds],
    truth: Sequence[int] | None,
    order: Sequence[int] | None = None,
    output: str = PROBABILITIES,
    reference: np.ndarray | None = None,
    lean: bytes | None = None,
) -> tuple[dict[str, bytes], dict[str, dict[str, Any]]]:
    """Each variant's file (and its lean twin's, given the version's ``lean`` graph), and how it compares with the
    FP32 graph on the prepared calls.

    ``truth`` (labels of the rows, in their original order; ``order`` says how the calls hold them) adds the
    variant's scores and their deltas; without it only agreement and the largest probability difference.
    ``reference``: the FP32 graph's ``output`` on those calls, where the caller has it already.
    """
    if not kinds:
        return {}, {}
    order = list(range(sum(len(next(iter(call.values()))) for call in calls))) if order is None else order
    reference = predict(onnx_bytes, calls, order, output) if reference is None else reference
    baseline = score(list(truth), reference.argmax(-1)) if truth is not None else None
    files, info = {}, {}
    for kind in kinds:
        data = BUILDERS[kind](onnx_bytes)
        probabilities = predict(data, calls, order, output)
        files[VARIANT_FILES[kind]] = data
        info[kind] = {
            "file": VARIANT_FILES[kind],
            **_deltas(truth, probabilities, baseline),
            **_against(probabilities, reference),
            "bytes": len(data),
        }
        if lean is not None and kind in LEAN_VARIANT_FILES:
            twin = _lean_twin(kind, lean, calls, order, output, reference)
            if twin is not None:
                files[LEAN_VARIANT_FILES[kind]] = twin[0]
                info[kind]["lean"] = {"file": LEAN_VARIANT_FILES[kind], **twin[1], "bytes": len(twin[0])}
    return files, info


def _against(probabilities: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    return {
        "max_probability_diff": round(float(np.max(np.abs(probabilities - reference))), 6),
        "agreement": round(float(np.mean(probabilities.argmax(-1) == reference.argmax(-1))), 4),
    }


def _lean_twin(
    kind: str, lean: bytes, calls: Sequence[Feeds], order: Sequence[int], output: str, reference: np.ndarray
) -> tuple[bytes, dict[str, float]] | None:
    """The variant made from the lean graph, and how it compares with the FP32 graph; None if it cannot be made
    (FP16's converter may not know a fused kernel) or does not run here."""
    try:
        data = BUILDERS[kind](lean)
        return data, _against(predict(data, calls, order, output), reference)
    except Exception:  # a variant the converter or the CPU cannot run: the version keeps the plain variant
        log.warning("no lean %s variant: %s", kind, "the conversion or a CPU run failed", exc_info=True)
        return None


def _deltas(truth: Sequence[int] | None, probabilities: np.ndarray, baseline: dict[str, Any] | None) -> dict[str, Any]:
    if truth is None or baseline is None:
        return {"metrics": None, "accuracy_delta": None, "macro_f1_delta": None}
    metrics = score(list(truth), probabilities.argmax(-1))
    return {
        "metrics": metrics,
        "accuracy_delta": round(metrics["accuracy"] - baseline["accuracy"], 4),
        "macro_f1_delta": round(metrics["macro_f1"] - baseline["macro_f1"], 4),
    }
