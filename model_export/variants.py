"""Optimized variants of an exported graph: ORT-optimized, INT8 dynamic quantization (CPU), FP16 (GPU).

Each variant is scored on the test split against the FP32 graph, and the deltas go into ``model.json``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16

from model_export.scoring import score

VARIANT_FILES = {"optimized": "model.optimized.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}


def optimize(onnx_bytes: bytes) -> bytes:
    """ONNX Runtime's extended graph optimizations, saved (may use ``com.microsoft`` fused ops)."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        return target.read_bytes()


def quantize_int8(onnx_bytes: bytes) -> bytes:
    """Dynamic INT8 quantization of the MatMul and embedding weights (activations quantized at run time)."""
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(onnx_bytes)
        quantize_dynamic(source, target, op_types_to_quantize=["MatMul", "Gather"], weight_type=QuantType.QInt8)
        return target.read_bytes()


def convert_fp16(onnx_bytes: bytes) -> bytes:
    """FP16 weights and compute, FP32 inputs and outputs kept so callers see no difference."""
    model = convert_float_to_float16(onnx.load_from_string(onnx_bytes), keep_io_types=True)
    return bytes(model.SerializeToString())


BUILDERS: dict[str, Callable[[bytes], bytes]] = {"optimized": optimize, "int8": quantize_int8, "fp16": convert_fp16}


def predict_probabilities(onnx_bytes: bytes, batches: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Probabilities of a graph over prepared batches, on the CPU."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    rows = [session.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})[0] for ids, mask in batches]
    return np.concatenate(rows)


def build_variants(
    onnx_bytes: bytes, kinds: Sequence[str], batches: list[tuple[np.ndarray, np.ndarray]], truth: list[int]
) -> tuple[dict[str, bytes], dict[str, dict[str, Any]]]:
    """Each variant's file, and its scores on the test split with the deltas against the FP32 graph."""
    reference = predict_probabilities(onnx_bytes, batches)
    baseline = score(truth, reference.argmax(-1))
    files, info = {}, {}
    for kind in kinds:
        data = BUILDERS[kind](onnx_bytes)
        probabilities = predict_probabilities(data, batches)
        metrics = score(truth, probabilities.argmax(-1))
        files[VARIANT_FILES[kind]] = data
        info[kind] = {
            "file": VARIANT_FILES[kind],
            "metrics": metrics,
            "accuracy_delta": round(metrics["accuracy"] - baseline["accuracy"], 4),
            "macro_f1_delta": round(metrics["macro_f1"] - baseline["macro_f1"], 4),
            "max_probability_diff": round(float(np.max(np.abs(probabilities - reference))), 6),
            "agreement": round(float(np.mean(probabilities.argmax(-1) == reference.argmax(-1))), 4),
            "bytes": len(data),
        }
    return files, info
