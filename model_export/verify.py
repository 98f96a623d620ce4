"""Check an existing model folder the way the service will load it (no TensorFlow needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from tokenizers import Tokenizer

from model_export import artifact
from model_export.export import check_graph
from model_export.tokenization import encode_batch

SAMPLE_TEXTS = ("the service works well", "a second, longer sentence to check that padding is masked out")


def verify_folder(folder: Path) -> dict[str, Any]:
    """Raise ``ArtifactError`` on the first problem; return a summary when the folder is sound."""
    metadata = artifact.read_metadata(folder)
    for key in ("labels", "max_sequence_length", "inputs", "outputs", "sha256", "files"):
        if key not in metadata:
            raise artifact.ArtifactError(f"{folder / artifact.METADATA_FILE}: missing field {key!r}")
    for filename, expected in metadata["sha256"].items():
        path = folder / filename
        if not path.is_file():
            raise artifact.ArtifactError(f"{path}: listed in model.json but missing")
        if artifact.sha256_of(path) != expected:
            raise artifact.ArtifactError(f"{path}: SHA-256 does not match model.json")
    model_path = folder / metadata["files"]["model"]
    check_graph(onnx.load(model_path))
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    _check_signature(session, metadata)
    tokenizer = Tokenizer.from_file(str(folder / metadata["files"]["tokenizer"]))
    ids, mask = encode_batch(tokenizer, list(SAMPLE_TEXTS), metadata["max_sequence_length"])
    probabilities, attention = session.run(["probabilities", "attention"], {"input_ids": ids, "attention_mask": mask})
    if probabilities.shape != (len(SAMPLE_TEXTS), len(metadata["labels"])):
        raise artifact.ArtifactError(f"probabilities have shape {probabilities.shape}, labels {metadata['labels']}")
    if not np.allclose(attention.sum(-1), 1.0, atol=1e-4) or np.any(attention[mask == 0] != 0):
        raise artifact.ArtifactError("pooling attention does not sum to 1 over the real tokens")
    return {
        "folder": str(folder),
        "name": metadata.get("name"),
        "version": metadata.get("version"),
        "labels": metadata["labels"],
        "metrics": metadata.get("metrics"),
        "baseline": metadata.get("baseline"),
        "parity": metadata.get("parity"),
        "sample": [dict(zip(metadata["labels"], map(float, row), strict=True)) for row in probabilities],
    }


def _check_signature(session: ort.InferenceSession, metadata: dict[str, Any]) -> None:
    dtype = {"tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(float)": "float32"}
    actual = {v.name: dtype.get(v.type, v.type) for v in [*session.get_inputs(), *session.get_outputs()]}
    declared = {v["name"]: v["dtype"] for v in [*metadata["inputs"], *metadata["outputs"]]}
    if actual != declared:
        raise artifact.ArtifactError(f"model.json declares {declared}, the graph has {actual}")
