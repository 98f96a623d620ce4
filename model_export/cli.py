"""``python -m model_export``: train and export a model, import your own, verify a folder, list a repository."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model_export import artifact

DEFAULT_REPOSITORY = Path("models")
VARIANT_CHOICES = ("optimized", "int8", "fp16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model_export", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train on a dataset and export the next model version")
    source = train.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="your CSV (header row) or JSONL file; default: the bundled corpus")
    source.add_argument("--needle", type=int, metavar="N", help="the synthetic needle task with N samples")
    train.add_argument("--text-column", default="text", help="text column of --data (default: text)")
    train.add_argument("--label-column", default="label", help="label column of --data (default: label)")
    train.add_argument("--name", default="sentiment", help="model name in the repository (default: sentiment)")
    train.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository (default: models)")
    train.add_argument("--variants", default="int8", help=f"comma-separated, from {VARIANT_CHOICES}, or 'none'")
    train.add_argument("--require-baseline", action="store_true", help="fail if macro-F1 is below the baseline's")
    _add_sizes(train)
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    _add_import(commands)

    derive = commands.add_parser("variants", help="write the next version with optimized variants added")
    derive.add_argument("folder", type=Path, help="an existing version folder, e.g. models/sentiment/1")
    derive.add_argument("--kinds", default="optimized,int8,fp16", help=f"comma-separated, from {VARIANT_CHOICES}")
    derive.add_argument("--data", type=Path, help="the training file, if model.json's source is not reachable")
    derive.add_argument("--text-column", default="text")
    derive.add_argument("--label-column", default="label")

    verify = commands.add_parser("verify", help="check a model version folder as the service will load it")
    verify.add_argument("folder", type=Path)

    listing = commands.add_parser("list", help="list models, versions and their test metrics")
    listing.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    return parser


def _add_import(commands: Any) -> None:
    parser = commands.add_parser("import", help="import your own Keras/TensorFlow classifier as the next version")
    parser.add_argument(
        "model", type=Path, help="a Keras 3 .keras file, a keras-hub preset folder or a TensorFlow SavedModel folder"
    )
    parser.add_argument("--labels", required=True, help="class names, comma-separated, in the output's order")
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--tokenizer", type=Path, help="a Hugging Face tokenizer.json (any model type)")
    text.add_argument(
        "--vocab", type=Path, help="a vocabulary file, one token per line (line number = id): WordPiece or words"
    )
    parser.add_argument(
        "--preprocessor",
        type=Path,
        help="a keras-hub preset folder (or .keras task) holding the model's preprocessor or tokenizer: "
        "rebuilt as tokenizer.json and checked id for id",
    )
    parser.add_argument("--name", help="model name in the repository (default: the model file's stem)")
    parser.add_argument(
        "--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository (default: models)"
    )
    parser.add_argument(
        "--attention-layer",
        action="append",
        default=[],
        metavar="LAYER",
        help="a layer whose output is attention weights [B,T,T] or [B,H,T,T] (repeatable; default: found)",
    )
    parser.add_argument("--custom-objects", type=Path, help="a Python file registering the model's custom layers")
    parser.add_argument("--logits", action="store_true", help="the model outputs logits: the graph applies softmax")
    parser.add_argument("--max-len", type=int, help="longest sequence (default: what the model says)")
    parser.add_argument("--data", type=Path, help="a labelled CSV/JSONL file to score the imported model on")
    parser.add_argument("--text-column", default="text", help="text column of --data (default: text)")
    parser.add_argument("--label-column", default="label", help="label column of --data (default: label)")
    parser.add_argument("--variants", default="none", help=f"comma-separated, from {VARIANT_CHOICES}, or 'none'")


def _add_sizes(parser: argparse.ArgumentParser) -> None:
    from model_export.config import ModelConfig, TrainConfig

    model, train = ModelConfig(), TrainConfig()
    parser.add_argument("--vocab-size", type=int, default=model.vocab_size)
    parser.add_argument("--max-len", type=int, default=model.max_len, help="longest sequence the model accepts")
    parser.add_argument("--d-model", type=int, default=model.d_model)
    parser.add_argument("--heads", type=int, default=model.num_heads)
    parser.add_argument("--layers", type=int, default=model.num_layers)
    parser.add_argument("--ff-dim", type=int, default=model.ff_dim)
    parser.add_argument("--dropout", type=float, default=model.dropout)
    parser.add_argument("--epochs", type=int, default=train.epochs)
    parser.add_argument("--batch-size", type=int, default=train.batch_size)
    parser.add_argument("--learning-rate", type=float, default=train.learning_rate)
    parser.add_argument("--patience", type=int, default=train.patience)
    parser.add_argument("--seed", type=int, default=train.seed)


def _train(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from model_export import data, pipeline
    from model_export.config import ModelConfig, TrainConfig

    kinds = _parse_variants(args.variants)
    artifact.check_name(args.name)
    _check_writable(args.repository)
    if args.needle is not None:
        dataset = data.needle_task(args.needle, seed=args.seed)
    elif args.data is not None:
        dataset = data.load_file(args.data, args.text_column, args.label_column)
    else:
        dataset = data.load_bundled_corpus()
    model = ModelConfig(
        vocab_size=args.vocab_size, max_len=args.max_len, d_model=args.d_model, num_heads=args.heads,
        num_layers=args.layers, ff_dim=args.ff_dim, dropout=args.dropout, num_classes=len(dataset.label_names),
    )  # fmt: skip
    training = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        patience=args.patience, seed=args.seed,
    )  # fmt: skip
    request = pipeline.ExportRequest(args.repository, args.name, model, training, kinds, args.require_baseline)
    folder = pipeline.run(dataset, request, verbose=0 if args.quiet else 1)
    metadata = artifact.read_metadata(folder)
    print(json.dumps({"folder": str(folder), **{k: metadata[k] for k in ("metrics", "baseline", "parity")}}, indent=2))
    return 0


def _import(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for flag, path in [("MODEL", args.model), ("--tokenizer", args.tokenizer), ("--vocab", args.vocab),
                       ("--preprocessor", args.preprocessor), ("--custom-objects", args.custom_objects),
                       ("--data", args.data)]:  # fmt: skip
        if path is not None and not path.exists():  # before TensorFlow loads: a typo fails at once
            raise artifact.ArtifactError(f"{path}: no such file or folder ({flag})")
    _check_writable(args.repository)
    from model_export.importer import ImportRequest, run_import

    request = ImportRequest(
        model=args.model,
        labels=tuple(label.strip() for label in args.labels.split(",") if label.strip()),
        repository=args.repository,
        name=args.name or args.model.resolve().stem,
        tokenizer=args.tokenizer,
        vocab=args.vocab,
        preprocessor=args.preprocessor,
        attention_layers=tuple(args.attention_layer),
        custom_objects=args.custom_objects,
        logits=args.logits,
        max_len=args.max_len,
        data=args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        variants=_parse_variants(args.variants),
    )
    folder = run_import(request)
    metadata = artifact.read_metadata(folder)
    summary = {k: metadata[k] for k in ("signature", "metrics", "parity")}
    print(json.dumps({"folder": str(folder), **summary}, indent=2))
    return 0


def _check_writable(repository: Path) -> None:
    probe = repository
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise artifact.ArtifactError(f"{repository}: not a writable folder")


def _variants(args: argparse.Namespace) -> int:
    from model_export import data
    from model_export.derive import add_variants

    kinds = _parse_variants(args.kinds)
    dataset = data.load_file(args.data, args.text_column, args.label_column) if args.data else None
    folder = add_variants(args.folder, kinds, dataset)
    print(json.dumps({"folder": str(folder), "variants": artifact.read_metadata(folder)["variants"]}, indent=2))
    return 0


def _parse_variants(text: str) -> tuple[str, ...]:
    kinds = tuple(k for k in text.split(",") if k and k != "none")
    unknown = sorted(set(kinds) - set(VARIANT_CHOICES))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {VARIANT_CHOICES}")
    return kinds


def _verify(args: argparse.Namespace) -> int:
    from model_export.verify import verify_folder

    print(json.dumps(verify_folder(args.folder), indent=2))
    return 0


def _list(args: argparse.Namespace) -> int:
    if not args.repository.is_dir():
        raise artifact.ArtifactError(f"{args.repository}: no such folder")
    for model_dir in sorted(p for p in args.repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for version in artifact.existing_versions(model_dir):
            try:
                metrics = artifact.read_metadata(model_dir / str(version)).get("metrics", {})
            except artifact.ArtifactError as exc:
                metrics = {"error": str(exc)}
            print(f"{model_dir.name}/{version}\t{json.dumps(metrics)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("model_export").setLevel(logging.INFO)
    handlers = {"train": _train, "import": _import, "variants": _variants, "verify": _verify, "list": _list}
    try:
        return handlers[args.command](args)
    except Exception as exc:  # one clear line for known failures, not a traceback
        from model_export.data import DatasetError

        known: tuple[type[Exception], ...] = (artifact.ArtifactError, DatasetError, RuntimeError, ValueError)
        if isinstance(exc, known):
            print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line
            return 2
        raise
