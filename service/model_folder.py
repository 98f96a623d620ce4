"""One model version folder on disk: read ``model.json``, check it against the graph, load and warm up.

Everything here is blocking (file reads, hashing, session creation, warm-up) and runs in a worker thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from model_format.document import (
    FormatError,
    ModelSpec,
    check_hashes,
    check_tensors,
    load_tokenizer,
    read_document,
    read_spec,
)
from model_format.text import TextTokenizer
from service.providers import RuntimeLoadError
from service.runtime import OnnxModel, RuntimeOptions

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ModelFolderError(RuntimeError):
    """The folder is not a loadable model version; the message is safe to show (no absolute paths)."""


@dataclass(frozen=True)
class LoadedFolder:
    spec: ModelSpec
    model: OnnxModel
    tokenizer: TextTokenizer


def valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of the folder's files: changes when a copy is still landing."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))
    except OSError:
        return ()


def _check_signature(model: OnnxModel, spec: ModelSpec) -> None:
    dtypes = {t.name: t.dtype for t in [*model.inputs, *model.outputs]}
    check_tensors(spec, {t.name: t.dtype for t in model.inputs}, {t.name: t.shape for t in model.outputs}, dtypes)


def load_folder(
    folder: Path, name: str, version: int, options: RuntimeOptions, variant: str, warm_batch: int
) -> LoadedFolder:
    """Read, verify, open and warm one version; raise ``ModelFolderError`` with a safe reason."""
    try:
        spec = read_spec(read_document(folder), name, version, variant)
        check_hashes(folder, spec.document, (spec.model_file, spec.tokenizer_file))
        model = OnnxModel(folder / spec.model_file, options, (warm_batch, spec.max_length), spec.signature)
        _check_signature(model, spec)
        tokenizer = load_tokenizer(folder, spec, model.id_dtype)
    except (FormatError, RuntimeLoadError) as exc:
        raise ModelFolderError(str(exc)) from exc
    fixed = spec.signature.fixed_length
    lengths = [fixed] if fixed is not None else sorted({1, min(16, spec.max_length), spec.max_length})
    try:
        model.warm_up(warm_batch, lengths)
    except Exception as exc:
        raise ModelFolderError(f"warm-up inference failed: {type(exc).__name__}") from exc
    return LoadedFolder(spec, model, tokenizer)
