"""The model contract of the service: a version's graphs behind one ``predict``. Numpy in, numpy out.

``OnnxModel(path, options, max_shape, signature, lean=...)``: the explaining graph (every output the signature
names, self-attention maps included) and, where the version has one, its lean twin (probabilities and per-token
attention only, ONNX Runtime's fused kernels). ``predict(ids, mask, roles, segments)`` runs the lean graph when it
gives every role asked for, the explaining one otherwise; the explaining graph of a version with a lean one is opened
on the first request that needs it (the explanation on demand), so an idle worker holds one graph. Roles are the
signature's (``probabilities``, ``attention``, ``self_attention``; whatever the graph calls them). It knows nothing
of HTTP, requests or batching.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from model_format.signature import SELF_ATTENTION, Signature, legacy_signature
from service.providers import RuntimeLoadError
from service.sessions import SHRINK_AFTER_ELEMENTS, RuntimeOptions, Session, TensorSpec

log = logging.getLogger(__name__)
__all__ = ["OnnxModel", "RuntimeLoadError", "RuntimeOptions", "TensorSpec", "release_memory"]
NUMPY_TYPES: dict[str, np.dtype[np.integer]] = {"int32": np.dtype(np.int32), "int64": np.dtype(np.int64)}


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


def to_layers_heads(array: np.ndarray, layout: str) -> np.ndarray:
    """Self-attention in the service's one layout, ``[batch, layers, heads, T, T]``, from the graph's."""
    if layout == "BHTT":
        return array[:, None]
    if layout == "BTT":
        return array[:, None, None]
    return array


class OnnxModel:
    """A version's graphs, fed and read through the model's signature."""

    def __init__(
        self,
        path: Path,
        options: RuntimeOptions,
        max_shape: tuple[int, int] = (32, 128),
        signature: Signature | None = None,
        lean: Path | None = None,
        check: Callable[[Session], None] | None = None,
    ) -> None:
        """``check`` is called with the explaining graph's session when it opens (now, or on first use)."""
        self.signature = signature or legacy_signature(())
        self._path, self._options, self._max_shape, self._check = path, options, max_shape, check
        self._lock = threading.Lock()
        self._explaining: Session | None = None
        self._maps_per_cell = 1  # layers × heads of the self-attention output, read when the graph opens
        first = Session(lean or path, options, max_shape, self.signature.input_names)
        self.lean: Session | None = first if lean is not None else None
        if lean is None:
            if signature is None:  # a folder from before signatures: its graph says whether it has self_attention
                self.signature = legacy_signature([o.name for o in first.outputs])
            self._opened(first)
        self.providers = first.providers
        self.inputs: list[TensorSpec] = first.inputs
        self.lean_outputs = frozenset(o.name for o in first.outputs) if lean is not None else frozenset()
        ids_type = next((t.dtype for t in first.inputs if t.name == self.signature.token_ids), "int64")
        self.id_dtype: np.dtype[np.integer] = NUMPY_TYPES.get(ids_type, np.dtype(np.int64))
        self.per_token_s = 0.0  # seconds of compute per token, measured by warm_up: the cost of a batch, estimated

    @property
    def device(self) -> str:
        return "cpu" if self.providers[0] == "CPUExecutionProvider" else "cuda"

    @property
    def threads(self) -> int:
        """ONNX Runtime intra-op threads of the version's sessions (0: ONNX Runtime's default)."""
        return self._options.intra_op_threads

    @property
    def outputs(self) -> list[TensorSpec]:
        """The tensors of the first graph opened (the lean one where the version has it)."""
        first = self.lean or self._explaining
        assert first is not None
        return first.outputs

    @property
    def explaining_loaded(self) -> bool:
        return self._explaining is not None

    def explaining(self) -> Session:
        """The explaining graph, opened now if it was not yet (once, whichever thread asks first)."""
        if self._explaining is None:
            with self._lock:
                if self._explaining is None:
                    started = time.monotonic()
                    self._opened(Session(self._path, self._options, self._max_shape, self.signature.input_names))
                    log.info("explaining graph opened in %.1f s", time.monotonic() - started)
        assert self._explaining is not None
        return self._explaining

    def _opened(self, session: Session) -> None:
        if self._check is not None:
            self._check(session)
        name = self.signature.outputs.get(SELF_ATTENTION)
        shape = next((o.shape for o in session.outputs if o.name == name), ())
        self._maps_per_cell = int(np.prod([d for d in shape[1:-2] if d > 0])) if shape else 1
        self._explaining = session

    def answers(self, roles: Sequence[str]) -> bool:
        """Whether the lean graph gives every role in ``roles``."""
        return self.lean is not None and all(self.signature.outputs[r] in self.lean_outputs for r in roles)

    def predict(
        self, ids: np.ndarray, mask: np.ndarray, roles: Sequence[str], segments: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Run a graph on padded ``ids``, ``mask`` and ``segments`` (batch, seq); return the outputs of ``roles``.

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
        session = self.lean if self.lean is not None and self.answers(roles) else self.explaining()
        names = [signature.outputs[role] for role in roles]
        large = SELF_ATTENTION in roles and ids.size * ids.shape[1] * self._maps_per_cell > SHRINK_AFTER_ELEMENTS
        found = dict(zip(roles, session.run(names, feed, large), strict=True))
        if SELF_ATTENTION in found:
            found[SELF_ATTENTION] = to_layers_heads(found[SELF_ATTENTION], signature.self_attention_layout)
        return found

    def warm_up(self, max_batch: int, lengths: Sequence[int]) -> None:
        """Run the first graph once per small shape with the outputs it gives, so the first real request pays no
        first-run cost, and measure its compute per token. Not the largest explanation: that shape would be kept
        by the memory arena for good."""
        roles = [r for r in self.signature.outputs if r != SELF_ATTENTION or self.lean is None]
        roles = [r for r in roles if self.lean is None or self.answers([r])]
        shapes = sorted({(batch, length) for batch in (1, min(max_batch, 4)) for length in lengths})
        for batch, length in shapes:
            ids = np.ones((batch, length), dtype=self.id_dtype)
            self.predict(ids, np.ones_like(ids), roles)
        batch, length = shapes[-1]
        ids = np.ones((batch, length), dtype=self.id_dtype)
        started = time.perf_counter()
        self.predict(ids, np.ones_like(ids), roles)
        self.per_token_s = (time.perf_counter() - started) / ids.size
