"""One ONNX Runtime session over one graph file: its options, provider and memory settings, IO binding, tensors.

Memory. ONNX Runtime's CPU arena keeps the largest block a run ever needed: warmed up with a 32 × 512 batch of
BERT-base-sized maps, a worker held 7.6 GB idle. Here, after a run whose tensors were large, the arena gives back what
it holds free (``memory.enable_memory_arena_shrinkage`` on that run); small runs keep their buffers, which are cheap
to keep and costly to allocate again. ``memory_arena=False`` turns the arena off (every tensor from the allocator).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.providers import (
    CPU_PROVIDER,
    RuntimeLoadError,
    check_fallback,
    choose_providers,
    preload_gpu_libraries,
    provider_options,
)

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
TYPE_NAMES = {"tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(float)": "float32"}
SHRINK_AFTER_ELEMENTS = 1 << 22  # a run producing more output values than this (16 MB of float32) shrinks the arena
# From this many parameters a batch's compute dwarfs a thread hand-off: a lone request should have every core.
LARGE_MODEL_PARAMETERS = 5_000_000


@dataclass(frozen=True)
class RuntimeOptions:
    """Session settings; ``providers`` None means the best available."""

    providers: tuple[str, ...] | None = None
    intra_op_threads: int = 0  # 0: ONNX Runtime's default
    large_model_threads: int = 0  # > 0: the intra-op threads of a model of LARGE_MODEL_PARAMETERS or more
    inter_op_threads: int = 1
    optimization_level: str = "all"
    io_binding: bool = True
    cache_dir: Path | None = None
    require_provider: bool = False
    allow_spinning: bool = False
    memory_arena: bool = True

    def threads_for(self, parameters: int) -> int:
        """Intra-op threads for a model of ``parameters``: ``large_model_threads`` for a large one where set (a lone
        request on it must not leave a core idle), else ``intra_op_threads``."""
        if self.large_model_threads and parameters >= LARGE_MODEL_PARAMETERS:
            return self.large_model_threads
        return self.intra_op_threads


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output; ``shape`` holds -1 for dynamic axes."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def _spec(node: ort.NodeArg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in node.shape)
    return TensorSpec(node.name, TYPE_NAMES.get(node.type, node.type), shape)


def session_options(options: RuntimeOptions) -> ort.SessionOptions:
    chosen = ort.SessionOptions()
    chosen.graph_optimization_level = OPTIMIZATION_LEVELS[options.optimization_level]
    chosen.intra_op_num_threads = options.intra_op_threads
    chosen.inter_op_num_threads = options.inter_op_threads
    chosen.log_severity_level = 3
    chosen.enable_cpu_mem_arena = options.memory_arena
    spin = "1" if options.allow_spinning else "0"
    chosen.add_session_config_entry("session.intra_op.allow_spinning", spin)
    chosen.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return chosen


class Session:
    """One graph file opened with the version's providers; ``run`` by output names, numpy in and out."""

    def __init__(self, path: Path, options: RuntimeOptions, max_shape: tuple[int, int], inputs: Sequence[str]) -> None:
        requested = choose_providers(options.providers, ort.get_available_providers())
        preload_gpu_libraries(requested)
        settings = provider_options(requested, options.cache_dir, max_shape, inputs)
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(options), providers=requested, provider_options=settings
            )
        except Exception as exc:  # ORT raises several unrelated types for an unreadable graph
            raise RuntimeLoadError(f"ONNX Runtime could not load the graph: {type(exc).__name__}") from exc
        self.providers: list[str] = list(self.session.get_providers())
        check_fallback(requested[0], self.providers[0], options.require_provider)
        self.inputs = [_spec(node) for node in self.session.get_inputs()]
        self.outputs = [_spec(node) for node in self.session.get_outputs()]
        self.use_binding = options.io_binding and self.providers[0] != CPU_PROVIDER
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    @property
    def device(self) -> str:
        return "cpu" if self.providers[0] == CPU_PROVIDER else "cuda"

    def run(self, names: Sequence[str], feed: dict[str, np.ndarray], large: bool = False) -> list[np.ndarray]:
        """The outputs ``names`` for ``feed``; ``large``: the run's tensors are big, give the arena back after."""
        if self.use_binding:
            return self._run_bound(feed, names)
        options = self._shrink if large and self.device == "cpu" else None
        return list(self.session.run(list(names), feed, options))

    def _run_bound(self, feed: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """Copy inputs to the device once and let ORT allocate outputs there, then fetch them together."""
        binding = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, self.device, 0))
        for name in outputs:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())
