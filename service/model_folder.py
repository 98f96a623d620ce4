"""One model version folder on disk: read ``model.json``, check it against the graph, load and warm up.

Everything here is blocking (file reads, hashing, session creation, warm-up) and runs in a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from model_format.document import (
    FormatError,
    ModelSpec,
    check_hashes,
    check_lean,
    check_tensors,
    load_tokenizer,
    read_document,
    read_spec,
)
from model_format.text import TextTokenizer
from service.providers import RuntimeLoadError
from service.runtime import OnnxModel, RuntimeOptions
from service.sessions import Session

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TOKEN_BUDGET = 225_000  # padded tokens per batch × the model's parameters in millions
WARM_LENGTH = 64  # warm-up runs short sequences: a long one's buffers would stay in the memory arena for good


class ModelFolderError(RuntimeError):
    """The folder is not a loadable model version; the message is safe to show (no absolute paths)."""


@dataclass(frozen=True)
class LoadedFolder:
    spec: ModelSpec
    model: OnnxModel
    tokenizer: TextTokenizer
    parameters: int = 0  # the FP32 graph's size in float32 values: how large the model is

    def default_batch_tokens(self, max_batch_size: int) -> int:
        """Padded tokens per batch when the setting leaves it to the model: a budget that shrinks as the model grows
        (about 2,048 for BERT-base), never under one longest sequence nor over a full batch of them."""
        length = self.spec.max_length
        budget = int(TOKEN_BUDGET / max(self.parameters / 1e6, 1e-3))
        return max(length, min(budget, max_batch_size * length))

    def default_explain_cells(self, budget_bytes: int) -> int:
        """Sequences × longest² per batch with maps, so that one batch's maps stay within ``budget_bytes``."""
        layers, heads = self.spec.layers_heads or (1, 1)
        per_cell = 4 * max(layers, 1) * max(heads, 1)
        return max(self.spec.max_length**2, budget_bytes // per_cell)


def valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of the folder's files: changes when a copy is still landing."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))
    except OSError:
        return ()


def _explaining_check(spec: ModelSpec) -> Callable[[Session], None]:
    """The explaining graph, when it opens, is what model.json declares (its tensors, the signature's roles)."""

    def check(session: Session) -> None:
        dtypes = {t.name: t.dtype for t in [*session.inputs, *session.outputs]}
        inputs, outputs = {t.name: t.dtype for t in session.inputs}, {t.name: t.shape for t in session.outputs}
        try:
            check_tensors(spec, inputs, outputs, dtypes)
        except FormatError as exc:
            raise RuntimeLoadError(str(exc)) from exc

    return check


def _open(folder: Path, spec: ModelSpec, options: RuntimeOptions, warm_batch: int) -> OnnxModel:
    """The version's graphs: the lean one checked now; the explaining one now if there is no lean one, else when
    a request first needs it."""
    lean = folder / spec.lean_file if spec.lean_file else None
    max_shape = (warm_batch, spec.max_length)
    model = OnnxModel(folder / spec.model_file, options, max_shape, spec.signature, lean, _explaining_check(spec))
    if model.lean is not None:
        inputs = {t.name: t.dtype for t in model.lean.inputs}
        check_lean(spec, inputs, {t.name: t.dtype for t in model.lean.outputs})
    return model


def load_folder(
    folder: Path, name: str, version: int, options: RuntimeOptions, variant: str, warm_batch: int
) -> LoadedFolder:
    """Read, verify, open and warm one version; raise ``ModelFolderError`` with a safe reason."""
    try:
        spec = read_spec(read_document(folder), name, version, variant)
        lean = (spec.lean_file,) if spec.lean_file else ()
        check_hashes(folder, spec.document, (spec.model_file, spec.tokenizer_file, *lean))
        parameters = (folder / str(spec.document["files"]["model"])).stat().st_size // 4
        model = _open(folder, spec, replace(options, intra_op_threads=options.threads_for(parameters)), warm_batch)
        tokenizer = load_tokenizer(folder, spec, model.id_dtype)
    except (FormatError, RuntimeLoadError) as exc:
        raise ModelFolderError(str(exc)) from exc
    fixed = spec.signature.fixed_length
    lengths = [fixed] if fixed is not None else sorted({1, min(16, spec.max_length), min(WARM_LENGTH, spec.max_length)})
    try:
        model.warm_up(warm_batch, lengths)
    except Exception as exc:
        raise ModelFolderError(f"warm-up inference failed: {type(exc).__name__}") from exc
    return LoadedFolder(spec, model, tokenizer, parameters)
