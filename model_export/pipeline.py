"""One export run: dataset → splits → training → ONNX → checks → variants → a new model version folder."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from model_export import artifact, variants
from model_export.config import ModelConfig, TrainConfig
from model_export.data import Dataset, Splits, split_dataset
from model_export.export import OPSET, export_onnx, graph_io, signature_of, trained_parity
from model_export.feeds import Feeds
from model_export.tokenization import PAD_ID, encode_batch
from model_export.train import TrainedModel, train

log = logging.getLogger(__name__)
EXPORTER_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "tokenizers")


@dataclass(frozen=True)
class ExportRequest:
    """Everything one run needs besides the dataset."""

    repository: Path
    name: str
    model: ModelConfig
    training: TrainConfig
    variants: tuple[str, ...] = ()
    require_baseline: bool = False


def run(dataset: Dataset, request: ExportRequest, verbose: int = 1) -> Path:
    """Train, export and write the next version of ``request.name``; return its folder."""
    started = time.monotonic()
    artifact.check_name(request.name)
    splits = split_dataset(
        dataset, request.training.test_fraction, request.training.validation_fraction, request.training.seed
    )
    trained = train(splits, request.model, request.training, verbose=verbose)
    if request.require_baseline and trained.metrics["macro_f1"] < trained.baseline["macro_f1"]:
        raise RuntimeError(
            f"macro-F1 {trained.metrics['macro_f1']} is below the TF-IDF + LR baseline's {trained.baseline['macro_f1']}"
        )
    proto = export_onnx(trained.model)
    onnx_bytes = proto.SerializeToString()
    test_batches = _batches(trained, splits.test[0])
    parity = trained_parity(trained.model, onnx_bytes, _real_cases(trained, splits.test[0]), request.training.seed)
    files = {artifact.MODEL_FILE: onnx_bytes, artifact.TOKENIZER_FILE: trained.tokenizer.to_str().encode("utf-8")}
    variant_files, variant_info = variants.build_variants(onnx_bytes, request.variants, test_batches, splits.test[1])
    files.update(variant_files)
    metadata = _metadata(dataset, splits, trained, graph_io(proto), parity.__dict__, variant_info)
    metadata["signature"] = signature_of(trained.model).to_json()
    metadata["train_config"] = request.training.to_dict()
    metadata["export_seconds"] = round(time.monotonic() - started, 1)
    folder = artifact.write_version(request.repository, request.name, files, metadata)
    log.info("wrote %s in %.0f s", folder, time.monotonic() - started)
    return folder


def _batches(trained: TrainedModel, texts: list[str]) -> list[Feeds]:
    return scoring_batches(trained.tokenizer, texts, trained.config.max_len)


def scoring_batches(tokenizer: Tokenizer, texts: list[str], max_len: int, size: int = 64) -> list[Feeds]:
    """The test texts as padded batches, for scoring graphs with ONNX Runtime."""
    return [_feeds(*encode_batch(tokenizer, texts[i : i + size], max_len)) for i in range(0, len(texts), size)]


def _real_cases(trained: TrainedModel, texts: list[str]) -> list[Feeds]:
    """Real test texts as batches of 1, 5 and 32 (padded), for the parity check."""
    return [_feeds(*encode_batch(trained.tokenizer, texts[:n], trained.config.max_len)) for n in (1, 5, 32)]


def _feeds(ids: np.ndarray, mask: np.ndarray) -> Feeds:
    return {"input_ids": ids, "attention_mask": mask}


def _metadata(
    dataset: Dataset,
    splits: Splits,
    trained: TrainedModel,
    io: dict[str, Any],
    parity: dict[str, Any],
    variant_info: dict[str, Any],
) -> dict[str, Any]:
    return {
        "task": "text-classification",
        "labels": splits.label_names,
        "max_sequence_length": trained.config.max_len,
        "vocab_size": trained.config.vocab_size,
        "pad_token_id": PAD_ID,
        "inputs": io["inputs"],
        "outputs": io["outputs"],
        "opset": OPSET,
        "files": {"model": artifact.MODEL_FILE, "tokenizer": artifact.TOKENIZER_FILE},
        "variants": variant_info,
        "model_config": trained.config.to_dict(),
        "data": {
            **dataset.description,
            "splits": {name: len(getattr(splits, name)[0]) for name in ("train", "validation", "test")},
        },
        "metrics": trained.metrics,
        "baseline": {"method": "TF-IDF + logistic regression, same test split", **trained.baseline},
        "parity": parity,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "exporter": exporter_versions(),
    }


def exporter_versions() -> dict[str, str]:
    """Versions of the packages that made the graph, for model.json."""
    found = {}
    for package in EXPORTER_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
