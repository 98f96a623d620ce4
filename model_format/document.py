"""``model.json``: read and checked in this one place, by the exporter's ``verify`` and by the service alike.

A version folder ``<repository>/<name>/<version>/`` holds the graph(s), ``tokenizer.json`` and ``model.json``
(docs/MODEL_FOLDER.md). ``read_spec`` turns the document into a checked ``ModelSpec``; ``check_hashes`` and
``check_tensors`` hold the files and the graph to what it declares. Every message is safe to show a client: it
names fields and file names, never a machine path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_format.signature import (
    LAYOUT_RANKS,
    PROBABILITIES,
    SELF_ATTENTION,
    Signature,
    SignatureError,
    check_graph,
    read_signature,
)
from model_format.text import TextTokenizer

METADATA_FILE = "model.json"
MODEL_FILE = "model.onnx"
LEAN_FILE = "model.lean.onnx"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1


class FormatError(ValueError):
    """The folder does not hold a valid model version; the message says which field or file, and why."""


@dataclass(frozen=True)
class ModelSpec:
    """What ``model.json`` says, checked: labels, lengths, files (the chosen variant's graph) and the signature."""

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
    lean_file: str | None = None  # the chosen variant's lean graph (answers only, fused kernels), if it has one

    @property
    def pad_id(self) -> int:
        return self.signature.pad_id

    @property
    def layers_heads(self) -> tuple[int, int] | None:
        """Self-attention's layers and heads as model.json declares its output (-1 where dynamic); None without."""
        name = self.signature.outputs.get(SELF_ATTENTION)
        declared = next((t for t in self.document.get("outputs", []) if t.get("name") == name), None)
        if name is None or declared is None:
            return None
        shape = [d if isinstance(d, int) else -1 for d in declared.get("shape", [])]
        layout = self.signature.self_attention_layout
        if len(shape) != LAYOUT_RANKS[layout]:
            return None
        return (shape[1], shape[2]) if layout == "BLHTT" else (1, shape[1]) if layout == "BHTT" else (1, 1)


def read_document(folder: Path) -> dict[str, Any]:
    """The parsed ``model.json`` of ``folder``."""
    try:
        document = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FormatError("model.json is missing") from exc
    except (OSError, ValueError) as exc:
        raise FormatError(f"model.json is unreadable: {type(exc).__name__}") from exc
    if not isinstance(document, dict):
        raise FormatError("model.json is not a JSON object")
    return document


def read_spec(document: dict[str, Any], name: str, version: int, variant: str = "fp32") -> ModelSpec:
    """Check the fields every room relies on and pick ``variant``'s graph where the version has it (else FP32)."""
    try:
        labels = tuple(str(label) for label in document["labels"])
        max_length, vocab_size = int(document["max_sequence_length"]), int(document["vocab_size"])
        files = document["files"]
        model_file = str(files["model"])
        if not isinstance(document["sha256"], dict):
            raise TypeError("sha256 must be an object")
        declared = [str(t["name"]) for t in document.get("outputs", [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"model.json lacks a valid field: {exc}") from exc
    if len(labels) < 2 or max_length < 1 or vocab_size < 1:
        raise FormatError("model.json needs two or more labels, a positive max length and vocabulary size")
    try:
        signature = read_signature(document, declared)
    except SignatureError as exc:
        raise FormatError(f"model.json: {exc}") from exc
    if signature.fixed_length is not None and max_length > signature.fixed_length:
        raise FormatError("model.json: max_sequence_length exceeds the signature's fixed_length")
    chosen, lean_file = "fp32", files.get("lean")
    variant_entry = document.get("variants", {}).get(variant) if variant != "fp32" else None
    if isinstance(variant_entry, dict) and "file" in variant_entry:
        model_file, chosen = str(variant_entry["file"]), variant
        lean_entry = variant_entry.get("lean")
        lean_file = lean_entry.get("file") if isinstance(lean_entry, dict) else None
    tokenizer_file = str(files.get("tokenizer", TOKENIZER_FILE))
    for filename in (model_file, tokenizer_file, *([str(lean_file)] if lean_file is not None else [])):
        if not _plain_name(filename):
            raise FormatError(f"model.json: {filename[:40]!r} is not a file name of the folder")
    return ModelSpec(
        name, version, labels, max_length, vocab_size, model_file, tokenizer_file, chosen, signature, document,
        str(lean_file) if lean_file is not None else None,
    )  # fmt: skip


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_hashes(folder: Path, document: Mapping[str, Any], files: tuple[str, ...]) -> None:
    """Each file must exist and match its SHA-256 in model.json."""
    hashes = document["sha256"]
    for filename in files:
        if filename not in hashes or not _plain_name(filename):
            raise FormatError(f"model.json gives no SHA-256 for {filename!r}")
        try:
            digest = sha256_of(folder / filename)
        except FileNotFoundError as exc:
            raise FormatError(f"{filename} is missing") from exc
        except OSError as exc:
            raise FormatError(f"{filename} is unreadable: {type(exc).__name__}") from exc
        if digest != hashes[filename]:
            raise FormatError(f"{filename} does not match the SHA-256 in model.json")


def check_lean(spec: ModelSpec, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> None:
    """A lean graph: the explaining graph's inputs, and some of its outputs (probabilities among them), same types."""
    declared = {t["name"]: t["dtype"] for t in [*spec.document.get("inputs", []), *spec.document.get("outputs", [])]}
    wrong = {name: dtype for name, dtype in {**inputs, **outputs}.items() if declared.get(name) != dtype}
    expected = sorted(spec.signature.input_names)
    if wrong or sorted(inputs) != expected or spec.signature.outputs[PROBABILITIES] not in outputs:
        raise FormatError(f"the lean graph's tensors {dict(inputs) | dict(outputs)} do not fit model.json")


def check_tensors(
    spec: ModelSpec, inputs: Mapping[str, str], outputs: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str]
) -> None:
    """The graph is what model.json declares: ``inputs`` name → dtype, ``outputs`` name → shape (-1 dynamic),
    ``dtypes`` every tensor's dtype; the signature fits it and there is one probability column per label."""
    declared = {t["name"]: t["dtype"] for t in [*spec.document.get("inputs", []), *spec.document.get("outputs", [])]}
    if declared != dict(dtypes):
        raise FormatError(f"model.json declares tensors {declared}, the graph has {dict(dtypes)}")
    try:
        check_graph(spec.signature, inputs, outputs)
    except SignatureError as exc:
        raise FormatError(str(exc)) from exc
    classes = outputs[spec.signature.outputs[PROBABILITIES]][-1]
    if classes != -1 and classes != len(spec.labels):
        raise FormatError(f"the graph has {classes} classes, model.json {len(spec.labels)} labels")


def load_tokenizer(folder: Path, spec: ModelSpec, id_dtype: Any) -> TextTokenizer:
    """The version's tokenizer, checked against the model: ids within the vocabulary, pairs where promised."""
    try:
        truncation = str(spec.signature.text.get("truncation", "round_robin"))
        tokenizer = TextTokenizer(folder / spec.tokenizer_file, id_dtype, spec.max_length, truncation=truncation)
    except Exception as exc:  # tokenizers raises its own exception type for a bad file
        raise FormatError(f"the tokenizer could not be loaded: {type(exc).__name__}") from exc
    if tokenizer.vocab_size > spec.vocab_size:
        raise FormatError("the tokenizer's vocabulary is larger than the model's")
    if spec.signature.pairs and not tokenizer.pairs:
        raise FormatError("the signature says the model takes text pairs, but tokenizer.json has no pair template")
    return tokenizer


def _plain_name(filename: str) -> bool:
    return bool(filename) and "/" not in filename and "\\" not in filename and filename not in (".", "..")
