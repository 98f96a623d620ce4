"""Execution providers: which to ask ONNX Runtime for, their options, and noticing its quiet fallbacks."""

from __future__ import annotations

import ctypes.util
import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"


class RuntimeLoadError(RuntimeError):
    """The graph could not be loaded, or no requested provider is available."""


def choose_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The requested providers (all must exist), or GPU ones where usable, always ending with the CPU."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise RuntimeLoadError(f"execution providers not available here: {missing} (available: {list(available)})")
        chosen = list(requested)
    else:
        chosen = [p for p in GPU_PROVIDERS if p in available and _usable(p)]
    return chosen if CPU_PROVIDER in chosen else [*chosen, CPU_PROVIDER]


def places_on_accelerator(requested: Sequence[str] | None) -> bool:
    """Whether sessions would go to a GPU provider first (onnxruntime-gpu lists CUDA even without a device)."""
    try:
        return choose_providers(requested, ort.get_available_providers())[0] != CPU_PROVIDER
    except RuntimeLoadError:
        return False  # the load will say why; a worker count is no place for that error


def check_fallback(requested: str, used: str, required: bool) -> None:
    """ONNX Runtime falls back quietly when a provider cannot start: say so, and refuse if it was required."""
    if requested == used:
        return
    if required:
        raise RuntimeLoadError(f"{requested} was required but ONNX Runtime uses {used}")
    log.warning("asked for %s, ONNX Runtime fell back to %s", requested, used)


def _usable(provider: str) -> bool:
    # onnxruntime-gpu lists TensorRT even where the TensorRT libraries are absent; only pick it when they exist.
    return provider != "TensorrtExecutionProvider" or ctypes.util.find_library("nvinfer") is not None


def preload_gpu_libraries(providers: Sequence[str]) -> None:
    """Load CUDA/cuDNN from pip ``nvidia-*`` packages when present (onnxruntime-gpu >= 1.21)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None and any(p in GPU_PROVIDERS for p in providers):
        preload()


def provider_options(
    providers: Sequence[str], cache_dir: Path | None, max_shape: tuple[int, int], inputs: Sequence[str]
) -> list[dict[str, str]]:
    """TensorRT gets an engine cache and, for the graph's ``inputs``, one optimisation profile from one token up
    to the largest batch."""
    batch, length = max_shape
    found: list[dict[str, str]] = []
    for provider in providers:
        settings: dict[str, str] = {}
        if provider == "TensorrtExecutionProvider":
            settings = {
                "trt_profile_min_shapes": ",".join(f"{name}:1x1" for name in inputs),
                "trt_profile_opt_shapes": ",".join(f"{name}:{batch}x{min(64, length)}" for name in inputs),
                "trt_profile_max_shapes": ",".join(f"{name}:{batch}x{length}" for name in inputs),
                "trt_engine_cache_enable": "True" if cache_dir else "False",
            }
            if cache_dir:
                settings["trt_engine_cache_path"] = str(cache_dir / "tensorrt")
        found.append(settings)
    return found
