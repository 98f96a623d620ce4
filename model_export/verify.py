"""Check an existing model folder the way the service will load it (no TensorFlow needed).

``model.json`` is read by the one reader of the format the service uses (``model_format``), so ``verify`` refuses
what the service would refuse; then the graph runs on sample texts: shapes, sums, and padding that changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from model_export import artifact, feeds
from model_export.export import check_graph
from model_format.document import check_hashes, check_tensors, load_tokenizer, read_document, read_spec
from model_format.signature import ATTENTION, LAYOUT_RANKS, PROBABILITIES, SELF_ATTENTION, Signature

SAMPLE_TEXTS = ("the service works well", "a second, longer sentence to check that padding is masked out")
TYPES = {"tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(float)": "float32"}


def verify_folder(folder: Path) -> dict[str, Any]:
    """Raise ``FormatError`` / ``ArtifactError`` on the first problem; return a summary when the folder is sound."""
    document = read_document(folder)
    spec = read_spec(document, folder.parent.name, int(document.get("version", 0)))
    check_hashes(folder, document, tuple(document["sha256"]))
    model_path = folder / spec.model_file
    check_graph(onnx.load(model_path), spec.signature if "signature" in document else None)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inputs = {v.name: TYPES.get(v.type, v.type) for v in session.get_inputs()}
    outputs = {v.name: tuple(d if isinstance(d, int) else -1 for d in v.shape) for v in session.get_outputs()}
    dtypes = {v.name: TYPES.get(v.type, v.type) for v in [*session.get_inputs(), *session.get_outputs()]}
    check_tensors(spec, inputs, outputs, dtypes)
    signature = spec.signature
    tokenizer = load_tokenizer(folder, spec, np.dtype(np.int64))
    rows = feeds.encode(tokenizer, list(SAMPLE_TEXTS), signature)
    probabilities = np.concatenate([_check_call(session, signature, spec.labels, [row]) for row in rows])
    if signature.paddable:
        together = _check_call(session, signature, spec.labels, rows)
        if not np.allclose(together, probabilities, atol=1e-4):
            raise artifact.ArtifactError("padding changes the answers, but the signature says padding is safe")
    return {
        "folder": str(folder),
        "name": document.get("name"),
        "version": document.get("version"),
        "labels": list(spec.labels),
        "signature": signature.to_json(),
        "metrics": document.get("metrics"),
        "baseline": document.get("baseline"),
        "parity": document.get("parity"),
        "sample": [dict(zip(spec.labels, map(float, row), strict=True)) for row in probabilities],
    }


def _check_call(
    session: ort.InferenceSession, signature: Signature, labels: tuple[str, ...], rows: list[list[int]]
) -> np.ndarray:
    """Run one call and check each output's shape and sums; return the probabilities."""
    call = feeds.feed(rows, signature)
    roles = [role for role in (PROBABILITIES, ATTENTION, SELF_ATTENTION) if role in signature.outputs]
    names = {role: signature.outputs[role] for role in roles}
    got = dict(zip(names, session.run(list(names.values()), call), strict=True))
    real = np.arange(call[signature.token_ids].shape[1])[None, :] < np.array([len(r) for r in rows])[:, None]
    probabilities = got[PROBABILITIES]
    if probabilities.shape != (len(rows), len(labels)):
        raise artifact.ArtifactError(f"probabilities have shape {probabilities.shape}, labels {list(labels)}")
    if not np.allclose(probabilities.sum(-1), 1.0, atol=1e-4):
        raise artifact.ArtifactError("probabilities do not sum to 1")
    if ATTENTION in got:
        attention = got[ATTENTION]
        if not np.allclose(attention.sum(-1), 1.0, atol=1e-4) or np.any(attention[~real] != 0):
            raise artifact.ArtifactError("attention does not sum to 1 over the real tokens")
    if SELF_ATTENTION in got and got[SELF_ATTENTION].ndim != LAYOUT_RANKS.get(signature.self_attention_layout):
        raise artifact.ArtifactError(f"self_attention has rank {got[SELF_ATTENTION].ndim}, not its layout's")
    return probabilities
