"""``python -m model_export import``: a user's TensorFlow classifier → the next version folder, with attention.

load (``loading``: a ``.keras`` file, a keras-hub preset, a SavedModel) → text → ids (``text_source``: the model's
own preprocessor rebuilt, or the user's tokenizer) → probe the model (``inspection``) → decide padding and lengths →
the tokenizer parity gate → one ``tf.function`` that runs the model statelessly, records its attention and returns
the signature's outputs (``graph``) → tf2onnx (``export.convert``) → parity with Keras → ``--data`` scores →
variants → an atomic write. Every check runs before anything is written: a refused import leaves no folder behind.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tensorflow as tf

from model_export import artifact, feeds, graph_attention, variants
from model_export.data import Dataset, load_file
from model_export.export import OPSET, ExportError, Parity, check_graph, convert, graph_io, verify_parity
from model_export.graph import Imported, forward, reference, softmax
from model_export.inspection import Plan, inspect_model
from model_export.lean import build_lean
from model_export.loading import ImportFailure, load_source, run_custom_objects
from model_export.padding import choose_layout
from model_export.pipeline import exporter_versions
from model_export.scoring import score
from model_export.text_source import check_text, choose_text
from model_format.signature import Source as AttentionSource
from model_format.signature import standard_signature

log = logging.getLogger(__name__)
SAMPLE_TEXTS = (
    "The service works well, and I would use it again.",
    "not good",
    "Terrible!!! never   again?",
    "an okay, unremarkable day; nothing more to say about it",
)


@dataclass(frozen=True)
class ImportRequest:
    """Everything one import needs (the command's options)."""

    model: Path
    labels: tuple[str, ...]
    repository: Path
    name: str
    tokenizer: Path | None = None
    vocab: Path | None = None
    preprocessor: Path | None = None
    attention_layers: tuple[str, ...] = ()
    custom_objects: Path | None = None
    logits: bool = False
    max_len: int | None = None
    data: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    variants: tuple[str, ...] = ()
    seed: int = 0


def run_import(request: ImportRequest) -> Path:
    """Import ``request.model`` and write it as the next version of ``request.name``; return the folder."""
    started = time.monotonic()
    _check_request(request)
    dataset = load_file(request.data, request.text_column, request.label_column) if request.data else None
    imported = prepare(request, dataset.texts if dataset else ())
    variables = imported.source.variables
    proto = convert(lambda inputs, weights: forward(imported, inputs, weights), imported.signature, weights=variables)
    del variables
    if imported.source.kind == "saved_model" and not imported.plan.maps:
        imported = _attention_in_graph(imported, proto)
    onnx_bytes, io = proto.SerializeToString(), graph_io(proto)
    del proto  # the graph is held once, as bytes, from here on
    rows, truth = _labelled_rows(imported, request, dataset)
    cases = _parity_cases(imported, request, rows)
    parity = verify_parity(lambda call: reference(imported, call), onnx_bytes, cases)
    if imported.source.text_vectorization is not None:
        parity = _text_parity(imported, onnx_bytes, parity)
    lean = build_lean(imported, onnx_bytes, cases)
    calls, order = feeds.batches(rows, imported.signature) if rows else (_random(imported, request), None)
    fp32 = feeds.predict(onnx_bytes, calls, order) if truth is not None and order is not None else None
    metrics = _metrics(truth, fp32)
    variant_files, variant_info = variants.build_variants(
        onnx_bytes, request.variants, calls, truth, order, reference=fp32, lean=lean.onnx_bytes
    )
    files = {artifact.MODEL_FILE: onnx_bytes, artifact.TOKENIZER_FILE: imported.text.data, **variant_files}
    if lean.onnx_bytes is not None:
        files[artifact.LEAN_FILE] = lean.onnx_bytes
    metadata = _metadata(request, imported, io, parity, metrics, variant_info, dataset)
    metadata["lean"] = lean.describe()
    if lean.onnx_bytes is not None:
        metadata["files"]["lean"] = artifact.LEAN_FILE
    metadata["export_seconds"] = round(time.monotonic() - started, 1)
    folder = artifact.write_version(request.repository, request.name, files, metadata)
    log.info("imported %s as %s in %.0f s", request.model, folder, time.monotonic() - started)
    return folder


def prepare(request: ImportRequest, texts: Sequence[str] = ()) -> Imported:
    """Load the model and its text side, probe it, decide the graph's layout and check its tokenizer against the
    model's own preprocessor (on ``texts`` too) — no conversion yet."""
    if request.custom_objects is not None:
        run_custom_objects(request.custom_objects)
    source = load_source(request.model)
    model_text = choose_text(source, request.tokenizer, request.vocab, request.preprocessor)
    plan = inspect_model(source, request.labels, request.logits, request.attention_layers, model_text.vocab_size)
    layout = choose_layout(source, plan, model_text, request.max_len)
    checked = check_text(model_text, layout.max_len, plan.token_vocabulary, texts)
    pairs = model_text.served(layout.max_len).pairs
    signature = standard_signature(
        mask=layout.padding == "mask",
        attention_source=_attention_source(plan),
        self_attention=bool(plan.maps),
        attention_layers=tuple(m.name for m in plan.maps),
        pad_id=layout.pad_id,
        padding=layout.padding,
        fixed_length=layout.fixed_length,
        text={"origin": model_text.origin, **model_text.details, "truncation": model_text.truncation, **checked},
        segments=source.has_segments,
        pairs=pairs,
    )
    return Imported(source, model_text, plan, layout, signature, model_text.served(layout.max_len))


def _attention_in_graph(imported: Imported, proto: onnx.ModelProto) -> Imported:
    """A SavedModel's attention, found among the converted graph's softmaxes (``graph_attention``): added as the
    ``self_attention`` and ``attention`` outputs, the signature saying so, the layers named by index."""
    signature, layout = imported.signature, imported.layout
    rng = np.random.default_rng(5)
    probes = [
        feeds.feed([[int(i) for i in rng.integers(1, layout.vocab_size, size=length)] for _ in range(2)], signature)
        for length in (min(5, layout.max_len), min(9, layout.max_len))
    ]
    found = graph_attention.find(proto, probes, signature)
    if found is None:
        return imported
    graph_attention.add_outputs(proto, found, signature)
    source: AttentionSource = "cls" if found.reads_first else "received"
    layers = tuple(f"layer {index}" for index in range(len(found.maps)))
    updated = dataclasses.replace(
        signature,
        outputs={**signature.outputs, "attention": "attention", "self_attention": "self_attention"},
        attention_source=source,
        attention_layers=layers,
    )
    check_graph(proto, updated)
    plan = dataclasses.replace(imported.plan, reads_first=found.reads_first)
    notes = (*plan.notes, f"attention found in the graph: {len(found.maps)} softmax layers of {found.heads} heads")
    return dataclasses.replace(imported, signature=updated, plan=dataclasses.replace(plan, notes=notes))


def _attention_source(plan: Plan) -> AttentionSource | None:
    """Pooling weights the model outputs; else, from the last layer's maps, the row of the position a classifier
    reads (``cls``) or the attention each token receives; None without attention."""
    if plan.pooling is not None:
        return "pooling"
    if not plan.maps:
        return None
    return "cls" if plan.reads_first else "received"


def _check_request(request: ImportRequest) -> None:
    artifact.check_name(request.name)
    if len(request.labels) < 2 or len(set(request.labels)) != len(request.labels):
        raise ImportFailure(f"--labels needs two or more distinct labels, got {list(request.labels)}")
    if request.tokenizer is not None and request.vocab is not None:
        raise ImportFailure("give --tokenizer or --vocab, not both")
    if request.preprocessor is not None and request.preprocessor.suffix not in ("", ".keras"):
        raise ImportFailure("--preprocessor: a keras-hub preset folder, or a .keras task saved with its preprocessor")
    if request.max_len is not None and request.max_len < 1:
        raise ImportFailure("--max-len must be at least 1")


def _labelled_rows(
    imported: Imported, request: ImportRequest, dataset: Dataset | None
) -> tuple[list[list[int]], list[int] | None]:
    if dataset is None:
        return [], None
    unknown = sorted(set(dataset.labels) - set(request.labels))
    if unknown:
        raise ImportFailure(f"{request.data}: labels {unknown} are not among --labels {list(request.labels)}")
    rows = feeds.encode(imported.served, dataset.texts, imported.signature)
    return rows, [request.labels.index(label) for label in dataset.labels]


def _parity_cases(imported: Imported, request: ImportRequest, rows: list[list[int]]) -> list[feeds.Feeds]:
    """Random ids of several shapes, and real texts (the sample sentences and the data's first rows)."""
    layout, signature = imported.layout, imported.signature
    cases = feeds.random_cases(signature, layout.vocab_size, layout.max_len, request.seed)
    real = feeds.encode(imported.served, list(SAMPLE_TEXTS), signature) + rows[:32]
    real = [row for row in real if row]
    calls, _ = feeds.batches(real, signature, size=16)
    return cases + calls


def _random(imported: Imported, request: ImportRequest) -> list[feeds.Feeds]:
    return feeds.random_cases(imported.signature, imported.layout.vocab_size, imported.layout.max_len, request.seed)


def _text_parity(imported: Imported, onnx_bytes: bytes, parity: Parity) -> Parity:
    """For a model that starts with TextVectorization: Keras on the raw texts vs ONNX on tokenizer.json's ids."""
    model = imported.source.text_model
    texts = list(SAMPLE_TEXTS)
    rows = feeds.encode(imported.served, texts, imported.signature)
    got = feeds.predict(onnx_bytes, [feeds.feed([row], imported.signature) for row in rows], range(len(rows)))
    strings = tf.constant(texts)[:, None] if len(model.inputs[0].shape) == 2 else tf.constant(texts)
    expected = np.concatenate([np.asarray(model(strings[i : i + 1], training=False)) for i in range(len(texts))])
    if imported.plan.logits:
        expected = softmax(expected)
    diff = float(np.max(np.abs(expected - got)))
    if not diff <= 1e-4:
        raise ExportError(f"Keras on the texts and ONNX on tokenizer.json's ids disagree by {diff:.3g}")
    per_output = {**parity.per_output, "probabilities_from_text": diff}
    return Parity(max(parity.max_abs_diff, diff), per_output, parity.cases + len(texts))


def _metrics(truth: list[int] | None, fp32: np.ndarray | None) -> dict[str, Any]:
    """The FP32 graph's scores on the labelled ``--data`` rows (none without them)."""
    if truth is None or fp32 is None:
        return {}
    return {**score(truth, fp32.argmax(-1)), "rows": len(truth)}


def _metadata(
    request: ImportRequest,
    imported: Imported,
    io: dict[str, Any],
    parity: Parity,
    metrics: dict[str, Any],
    variant_info: dict[str, Any],
    dataset: Dataset | None,
) -> dict[str, Any]:
    layout, plan = imported.layout, imported.plan
    options = {key: _plain(value) for key, value in asdict(request).items()}
    metadata: dict[str, Any] = {
        "task": "text-classification",
        "labels": list(request.labels),
        "max_sequence_length": layout.max_len,
        "vocab_size": layout.vocab_size,
        "pad_token_id": layout.pad_id,
        "inputs": io["inputs"],
        "outputs": io["outputs"],
        "opset": OPSET,
        "files": {"model": artifact.MODEL_FILE, "tokenizer": artifact.TOKENIZER_FILE},
        "signature": imported.signature.to_json(),
        "variants": variant_info,
        "metrics": metrics,
        "parity": asdict(parity),
        "source": {
            "kind": "import",
            "format": imported.source.kind,
            "model": request.model.name,
            "options": options,
            "prediction": imported.source.output_names[plan.probabilities],
            "logits": plan.logits,
            "attention": {
                "per_token": imported.signature.attention_source,
                "layers": list(imported.signature.attention_layers),
                "heads": plan.heads or _heads(io),
            },
            "padding": layout.reason,
            "notes": list(plan.notes),
        },
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "exporter": exporter_versions(),
    }
    if dataset is not None:
        metadata["data"] = dataset.description
    return metadata


def _heads(io: dict[str, Any]) -> int | None:
    """The head count of the graph's ``self_attention`` output, ``[batch, layers, heads, seq, seq]``."""
    shape = next((o["shape"] for o in io["outputs"] if o["name"] == "self_attention"), None)
    return int(shape[2]) if shape and isinstance(shape[2], int) else None


def _plain(value: Any) -> Any:
    """An option as JSON holds it: a path by its file name only (no machine's folders in model.json)."""
    if isinstance(value, Path):
        return value.name
    return list(value) if isinstance(value, tuple) else value
