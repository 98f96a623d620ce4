"""ONNX Runtime sessions: session options, IO binding. Numpy in, numpy out.

This is the model contract of the service: ``OnnxModel(path, options, max_shape, signature)``,
``predict(ids, mask, roles)`` keyed by the signature's roles (``probabilities``, ``attention``,
``self_attention``; whatever the graph calls them), and the graph's tensors. It knows nothing of HTTP, requests
or batching.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_format.signature import Signature, legacy_signature
from service.providers import (
    CPU_PROVIDER,
    RuntimeLoadError,
    check_fallback,
    choose_providers,
    preload_gpu_libraries,
    provider_options,
)

log = logging.getLogger(__name__)

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
NUMPY_TYPES: dict[str, np.dtype[np.integer]] = {
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
}
TYPE_NAMES = {"tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(float)": "float32"}


def release_memory() -> None:
    """Hand the native memory of dropped sessions back to the OS.

    glibc keeps freed blocks in its arenas, so without a trim every reload grows the process (measured: +66 MB
    over 12 reloads of the bundled model; flat with the trim). Elsewhere (musl, macOS) there is nothing to do.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    # The process's own symbols include libc's (glibc has malloc_trim; musl and macOS do not).
    trim: Callable[[int], int] | None = getattr(ctypes.CDLL(None), "malloc_trim", None)
    return trim


@dataclass(frozen=True)
class RuntimeOptions:
    """Session settings; ``providers`` None means the best available."""

    providers: tuple[str, ...] | None = None
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    optimization_level: str = "all"
    io_binding: bool = True
    cache_dir: Path | None = None
    require_provider: bool = False
    allow_spinning: bool = False


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output; ``shape`` holds -1 for dynamic axes."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def _spec(node: ort.NodeArg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in node.shape)
    return TensorSpec(node.name, TYPE_NAMES.get(node.type, node.type), shape)


def _open(
    path: Path, options: ort.SessionOptions, providers: list[str], settings: list[dict[str, str]]
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), options, providers=providers, provider_options=settings)
    except Exception as exc:  # ORT raises several unrelated types for an unreadable graph
        raise RuntimeLoadError(f"ONNX Runtime could not load the graph: {type(exc).__name__}") from exc


def to_layers_heads(array: np.ndarray, layout: str) -> np.ndarray:
    """Self-attention in the service's one layout, ``[batch, layers, heads, T, T]``, from the graph's."""
    if layout == "BHTT":
        return array[:, None]
    if layout == "BTT":
        return array[:, None, None]
    return array


def _session_options(options: RuntimeOptions) -> ort.SessionOptions:
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = OPTIMIZATION_LEVELS[options.optimization_level]
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    session_options.log_severity_level = 3
    spin = "1" if options.allow_spinning else "0"
    session_options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    session_options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return session_options


class OnnxModel:
    """One ONNX Runtime session over one graph file, fed and read through the model's signature."""

    def __init__(
        self,
        path: Path,
        options: RuntimeOptions,
        max_shape: tuple[int, int] = (32, 128),
        signature: Signature | None = None,
    ) -> None:
        requested = choose_providers(options.providers, ort.get_available_providers())
        preload_gpu_libraries(requested)
        inputs = self._input_names(signature)
        settings = provider_options(requested, options.cache_dir, max_shape, inputs)
        self.session = _open(path, _session_options(options), requested, settings)
        self.providers: list[str] = list(self.session.get_providers())
        check_fallback(requested[0], self.providers[0], options.require_provider)
        self.inputs = [_spec(node) for node in self.session.get_inputs()]
        self.outputs = [_spec(node) for node in self.session.get_outputs()]
        self.signature = signature or legacy_signature([o.name for o in self.outputs])
        types = {node.name: node.type for node in self.session.get_inputs()}
        self.id_dtype: np.dtype[np.integer] = NUMPY_TYPES.get(
            types.get(self.signature.token_ids, ""), np.dtype(np.int64)
        )
        self.use_binding = options.io_binding and self.providers[0] != CPU_PROVIDER

    @staticmethod
    def _input_names(signature: Signature | None) -> list[str]:
        return (signature or legacy_signature(())).input_names

    @property
    def layers_heads(self) -> tuple[int, int] | None:
        """Self-attention's layers and heads (-1 where the graph leaves them dynamic); None without it."""
        name = self.signature.outputs.get("self_attention")
        shape = next((o.shape for o in self.outputs if o.name == name), None)
        if shape is None:
            return None
        layout = self.signature.self_attention_layout
        return (shape[1], shape[2]) if layout == "BLHTT" else (1, shape[1]) if layout == "BHTT" else (1, 1)

    @property
    def device(self) -> str:
        return "cpu" if self.providers[0] == CPU_PROVIDER else "cuda"

    def predict(
        self, ids: np.ndarray, mask: np.ndarray, roles: Sequence[str], segments: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Run the graph on padded ``ids``, ``mask`` and ``segments`` (batch, seq); return the outputs of ``roles``.

        A graph without a mask input gets only the ids; one with a segment input gets ``segments`` (all 0 if None);
        self-attention comes back as ``[batch, L, H, T, T]``.
        """
        signature = self.signature
        feed = {signature.token_ids: ids.astype(self.id_dtype, copy=False)}
        if signature.mask is not None:
            feed[signature.mask] = mask.astype(self.id_dtype, copy=False)
        if signature.segments is not None:
            given = np.zeros_like(ids) if segments is None else segments
            feed[signature.segments] = given.astype(self.id_dtype, copy=False)
        names = [signature.outputs[role] for role in roles]
        arrays = self._predict_bound(feed, names) if self.use_binding else self.session.run(names, feed)
        found = dict(zip(roles, arrays, strict=True))
        if "self_attention" in found:
            found["self_attention"] = to_layers_heads(found["self_attention"], signature.self_attention_layout)
        return found

    def _predict_bound(self, feed: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """Copy inputs to the device once and let ORT allocate outputs there, then fetch them together."""
        binding = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, self.device, 0))
        for name in outputs:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def warm_up(self, max_batch: int, lengths: Sequence[int]) -> None:
        """Run each shape once with every output, so the first real request pays no first-run cost."""
        roles = list(self.signature.outputs)
        for batch in sorted({1, max_batch}):
            for length in lengths:
                ids = np.ones((batch, length), dtype=self.id_dtype)
                self.predict(ids, np.ones_like(ids), roles)
