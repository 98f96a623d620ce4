"""Derive a new version from an existing one by adding optimized variants (the source version is untouched).

Variants are scored where the version's model was: a trained model on its own test split, an imported one on
the labelled file it was imported with (``--data``, or the one given here). An imported model without labelled
data is compared with its FP32 graph on random inputs only (agreement, largest probability difference).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_export import artifact, feeds, variants
from model_export.config import TrainConfig
from model_export.data import Dataset, load_described, split_dataset
from model_format.document import load_tokenizer, read_spec
from model_format.signature import Signature, read_signature

log = logging.getLogger(__name__)


def add_variants(folder: Path, kinds: Sequence[str], dataset: Dataset | None = None) -> Path:
    """Write the next version of the model: the same files plus ``kinds`` variants, scored as above."""
    metadata = artifact.read_metadata(folder)
    signature = read_signature(metadata, [output["name"] for output in metadata.get("outputs", [])])
    calls, order, truth = _scoring_calls(folder, metadata, signature, dataset)
    onnx_bytes = (folder / artifact.MODEL_FILE).read_bytes()
    probabilities = signature.outputs["probabilities"]
    lean_file = metadata["files"].get("lean")
    lean = (folder / lean_file).read_bytes() if lean_file else None
    new_files, info = variants.build_variants(onnx_bytes, kinds, calls, truth, order, probabilities, lean=lean)
    files = {name: (folder / name).read_bytes() for name in metadata["sha256"]}
    files.update(new_files)
    metadata["variants"] = {**metadata.get("variants", {}), **info}
    metadata["derived_from"] = {"version": metadata.get("version"), "added_variants": list(kinds)}
    for key in ("format", "name", "version", "sha256"):
        metadata.pop(key, None)
    target = artifact.write_version(folder.parent.parent, folder.parent.name, files, metadata)
    log.info("wrote %s with variants %s", target, json.dumps({k: info[k]["accuracy_delta"] for k in info}))
    return target


def _scoring_calls(
    folder: Path, metadata: dict[str, Any], signature: Signature, dataset: Dataset | None
) -> tuple[list[feeds.Feeds], list[int], list[int] | None]:
    imported = metadata.get("source", {}).get("kind") == "import"
    if imported and dataset is None and "data" not in metadata:
        calls = feeds.random_cases(signature, int(metadata["vocab_size"]), int(metadata["max_sequence_length"]), 0)
        return calls, list(range(sum(len(call[signature.token_ids]) for call in calls))), None
    dataset = dataset or load_described(metadata.get("data", {}))
    labels = metadata["labels"]
    if imported:
        unknown = sorted(set(dataset.labels) - set(labels))
        if unknown:
            raise artifact.ArtifactError(f"the dataset has labels {unknown} the model does not know ({labels})")
        texts, truth = dataset.texts, [labels.index(label) for label in dataset.labels]
    else:
        if sorted(set(dataset.labels)) != labels:
            raise artifact.ArtifactError(f"the dataset's labels {dataset.label_names} are not the model's {labels}")
        training = TrainConfig.from_dict(metadata.get("train_config", {}))
        splits = split_dataset(dataset, training.test_fraction, training.validation_fraction, training.seed)
        texts, truth = splits.test
    spec = read_spec(metadata, folder.parent.name, int(metadata.get("version", 0)))
    rows = feeds.encode(load_tokenizer(folder, spec, np.dtype(np.int32)), texts, signature)
    calls, order = feeds.batches(rows, signature)
    return calls, order, truth
