"""Check an existing model folder the way the service will load it (no TensorFlow needed).

Every role is read from the folder's signature, so trained and imported folders (and folders written before
signatures existed) are checked alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from tokenizers import Tokenizer

from model_export import artifact, feeds
from model_export.export import check_graph
from model_export.signature import ATTENTION, PROBABILITIES, SELF_ATTENTION, Signature, read_signature

SAMPLE_TEXTS = ("the service works well", "a second, longer sentence to check that padding is masked out")
LAYOUT_RANKS = {"BLHTT": 5, "BHTT": 4, "BTT": 3}


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
    signature = read_signature(metadata, [output["name"] for output in metadata["outputs"]])
    check_graph(onnx.load(model_path), signature if "signature" in metadata else None)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    _check_declared(session, metadata)
    tokenizer = Tokenizer.from_file(str(folder / metadata["files"]["tokenizer"]))
    rows = feeds.encode(tokenizer, list(SAMPLE_TEXTS), metadata["max_sequence_length"], signature)
    probabilities = np.concatenate([_check_call(session, signature, metadata, [row]) for row in rows])
    if signature.paddable:
        together = _check_call(session, signature, metadata, rows)
        if not np.allclose(together, probabilities, atol=1e-4):
            raise artifact.ArtifactError("padding changes the answers, but the signature says padding is safe")
    return {
        "folder": str(folder),
        "name": metadata.get("name"),
        "version": metadata.get("version"),
        "labels": metadata["labels"],
        "signature": signature.to_json(),
        "metrics": metadata.get("metrics"),
        "baseline": metadata.get("baseline"),
        "parity": metadata.get("parity"),
        "sample": [dict(zip(metadata["labels"], map(float, row), strict=True)) for row in probabilities],
    }


def _check_call(
    session: ort.InferenceSession, signature: Signature, metadata: dict[str, Any], rows: list[list[int]]
) -> np.ndarray:
    """Run one call and check each output's shape and sums; return the probabilities."""
    call = feeds.feed(rows, signature)
    roles = [role for role in (PROBABILITIES, ATTENTION, SELF_ATTENTION) if role in signature.outputs]
    names = {role: signature.outputs[role] for role in roles}
    got = dict(zip(names, session.run(list(names.values()), call), strict=True))
    real = np.arange(call[signature.token_ids].shape[1])[None, :] < np.array([len(r) for r in rows])[:, None]
    probabilities = got[PROBABILITIES]
    if probabilities.shape != (len(rows), len(metadata["labels"])):
        raise artifact.ArtifactError(f"probabilities have shape {probabilities.shape}, labels {metadata['labels']}")
    if not np.allclose(probabilities.sum(-1), 1.0, atol=1e-4):
        raise artifact.ArtifactError("probabilities do not sum to 1")
    if ATTENTION in got:
        attention = got[ATTENTION]
        if not np.allclose(attention.sum(-1), 1.0, atol=1e-4) or np.any(attention[~real] != 0):
            raise artifact.ArtifactError("attention does not sum to 1 over the real tokens")
    if SELF_ATTENTION in got and got[SELF_ATTENTION].ndim != LAYOUT_RANKS.get(signature.self_attention_layout):
        raise artifact.ArtifactError(f"self_attention has rank {got[SELF_ATTENTION].ndim}, not its layout's")
    return probabilities


def _check_declared(session: ort.InferenceSession, metadata: dict[str, Any]) -> None:
    dtype = {"tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(float)": "float32"}
    actual = {v.name: dtype.get(v.type, v.type) for v in [*session.get_inputs(), *session.get_outputs()]}
    declared = {v["name"]: v["dtype"] for v in [*metadata["inputs"], *metadata["outputs"]]}
    if actual != declared:
        raise artifact.ArtifactError(f"model.json declares {declared}, the graph has {actual}")
