"""Derive a new version from an existing one by adding optimized variants (the source version is untouched)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from model_export import artifact, variants
from model_export.config import TrainConfig
from model_export.data import Dataset, load_described, split_dataset
from model_export.pipeline import scoring_batches
from model_export.tokenization import load_tokenizer

log = logging.getLogger(__name__)


def add_variants(folder: Path, kinds: Sequence[str], dataset: Dataset | None = None) -> Path:
    """Write the next version of the model: the same files plus ``kinds`` variants, scored on its test split."""
    metadata = artifact.read_metadata(folder)
    training = TrainConfig.from_dict(metadata.get("train_config", {}))
    dataset = dataset or load_described(metadata.get("data", {}))
    if sorted(set(dataset.labels)) != metadata["labels"]:
        raise artifact.ArtifactError(
            f"the dataset's labels {dataset.label_names} are not the model's {metadata['labels']}"
        )
    splits = split_dataset(dataset, training.test_fraction, training.validation_fraction, training.seed)
    tokenizer = load_tokenizer(folder / artifact.TOKENIZER_FILE)
    batches = scoring_batches(tokenizer, splits.test[0], metadata["max_sequence_length"])
    onnx_bytes = (folder / artifact.MODEL_FILE).read_bytes()
    new_files, info = variants.build_variants(onnx_bytes, kinds, batches, splits.test[1])
    files = {name: (folder / name).read_bytes() for name in metadata["sha256"]}
    files.update(new_files)
    metadata["variants"] = {**metadata.get("variants", {}), **info}
    metadata["derived_from"] = {"version": metadata.get("version"), "added_variants": list(kinds)}
    for key in ("format", "name", "version", "sha256"):
        metadata.pop(key, None)
    target = artifact.write_version(folder.parent.parent, folder.parent.name, files, metadata)
    log.info("wrote %s with variants %s", target, json.dumps({k: info[k]["accuracy_delta"] for k in info}))
    return target
