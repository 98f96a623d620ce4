"""One model version folder on disk: read ``model.json``, check it against the graph, load and warm up.

Everything here is blocking (file reads, hashing, session creation, warm-up) and runs in a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.providers import RuntimeLoadError
from service.runtime import OnnxModel, RuntimeOptions
from service.signature import Signature, SignatureError, check_graph, read_signature
from service.tokenizer import TextTokenizer

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
METADATA_FILE = "model.json"


class ModelFolderError(RuntimeError):
    """The folder is not a loadable model version; the message is safe to show (no absolute paths)."""


@dataclass(frozen=True)
class ModelSpec:
    """What the service needs from ``model.json``, checked."""

    name: str
    version: int
    labels: tuple[str, ...]
    max_length: int
    vocab_size: int
    model_file: str
    tokenizer_file: str
    variant: str
    signature: Signature
    document: dict[str, Any]

    @property
    def pad_id(self) -> int:
        return self.signature.pad_id


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


def read_spec(folder: Path, name: str, version: int, variant: str) -> ModelSpec:
    try:
        document = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelFolderError("model.json is missing") from exc
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"model.json is unreadable: {type(exc).__name__}") from exc
    if not isinstance(document, dict):
        raise ModelFolderError("model.json is not a JSON object")
    try:
        labels = tuple(str(label) for label in document["labels"])
        max_length, vocab_size = int(document["max_sequence_length"]), int(document["vocab_size"])
        model_file = str(document["files"]["model"])
        if not isinstance(document["sha256"], dict):
            raise TypeError("sha256 must be an object")
        declared = [str(t["name"]) for t in document.get("outputs", [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFolderError(f"model.json lacks a valid field: {exc}") from exc
    if len(labels) < 2 or max_length < 1 or vocab_size < 1:
        raise ModelFolderError("model.json needs two or more labels, a positive max length and vocabulary size")
    try:
        signature = read_signature(document, declared)
    except SignatureError as exc:
        raise ModelFolderError(f"model.json: {exc}") from exc
    if signature.fixed_length is not None and max_length > signature.fixed_length:
        raise ModelFolderError("model.json: max_sequence_length exceeds the signature's fixed_length")
    chosen = "fp32"
    variant_entry = document.get("variants", {}).get(variant) if variant != "fp32" else None
    if isinstance(variant_entry, dict) and "file" in variant_entry:
        model_file, chosen = str(variant_entry["file"]), variant
    tokenizer_file = str(document["files"].get("tokenizer", "tokenizer.json"))
    return ModelSpec(
        name, version, labels, max_length, vocab_size, model_file, tokenizer_file, chosen, signature, document
    )


def check_hashes(folder: Path, spec: ModelSpec, files: tuple[str, ...]) -> None:
    """Each file must exist and match its SHA-256 in model.json."""
    hashes = spec.document["sha256"]
    for filename in files:
        if filename not in hashes or "/" in filename or "\\" in filename:
            raise ModelFolderError(f"model.json gives no SHA-256 for {filename!r}")
        digest = hashlib.sha256()
        try:
            with (folder / filename).open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except FileNotFoundError as exc:
            raise ModelFolderError(f"{filename} is missing") from exc
        except OSError as exc:
            raise ModelFolderError(f"{filename} is unreadable: {type(exc).__name__}") from exc
        if digest.hexdigest() != hashes[filename]:
            raise ModelFolderError(f"{filename} does not match the SHA-256 in model.json")


def _check_signature(model: OnnxModel, spec: ModelSpec) -> None:
    declared = {t["name"]: t["dtype"] for t in [*spec.document.get("inputs", []), *spec.document.get("outputs", [])]}
    actual = {t.name: t.dtype for t in [*model.inputs, *model.outputs]}
    if declared != actual:
        raise ModelFolderError(f"model.json declares tensors {declared}, the graph has {actual}")
    try:
        check_graph(spec.signature, {t.name: t.dtype for t in model.inputs}, {t.name: t.shape for t in model.outputs})
    except SignatureError as exc:
        raise ModelFolderError(str(exc)) from exc
    probabilities = spec.signature.outputs["probabilities"]
    classes = next(t.shape[-1] for t in model.outputs if t.name == probabilities)
    if classes != -1 and classes != len(spec.labels):
        raise ModelFolderError(f"the graph has {classes} classes, model.json {len(spec.labels)} labels")


def load_folder(
    folder: Path, name: str, version: int, options: RuntimeOptions, variant: str, warm_batch: int
) -> LoadedFolder:
    """Read, verify, open and warm one version; raise ``ModelFolderError`` with a safe reason."""
    spec = read_spec(folder, name, version, variant)
    check_hashes(folder, spec, (spec.model_file, spec.tokenizer_file))
    try:
        model = OnnxModel(folder / spec.model_file, options, (warm_batch, spec.max_length), spec.signature)
    except RuntimeLoadError as exc:
        raise ModelFolderError(str(exc)) from exc
    _check_signature(model, spec)
    try:
        tokenizer = TextTokenizer(folder / spec.tokenizer_file, model.id_dtype, spec.max_length)
    except Exception as exc:  # tokenizers raises its own exception type for a bad file
        raise ModelFolderError(f"the tokenizer could not be loaded: {type(exc).__name__}") from exc
    if tokenizer.vocab_size > spec.vocab_size:
        raise ModelFolderError("the tokenizer's vocabulary is larger than the model's")
    fixed = spec.signature.fixed_length
    lengths = [fixed] if fixed is not None else sorted({1, min(16, spec.max_length), spec.max_length})
    try:
        model.warm_up(warm_batch, lengths)
    except Exception as exc:
        raise ModelFolderError(f"warm-up inference failed: {type(exc).__name__}") from exc
    return LoadedFolder(spec, model, tokenizer)
