"""Transformer classifiers at the sizes users serve, built from random weights (nothing downloaded), imported the way a
user imports them, with the import's time and peak memory measured.

    python bench/ladder.py --out DIR [--sizes mid,base] [--family bert]   # build, save (.keras), import

Sizes (keras-hub ``BertTextClassifier`` / ``DistilBertTextClassifier`` saved with their preprocessor, a synthetic
WordPiece vocabulary of the real size; the bundled model is models/sentiment/1):

| size | layers | hidden | heads | ffn | positions | vocabulary | parameters |
|---|---|---|---|---|---|---|---|
| ``mid`` | 4 | 256 | 4 | 1024 | 512 | 30,522 | ~11M |
| ``base`` | 12 | 768 | 12 | 3072 | 512 | 30,522 | ~110M (BERT-base) |
| ``distil`` | 6 | 768 | 12 | 3072 | 512 | 30,522 | ~67M (DistilBERT-base) |

Each import runs ``python -m model_export import MODEL --labels ...`` in a child process; its wall time and peak
resident memory (``ru_maxrss`` of the child) are printed as JSON and written to ``DIR/imports.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import string
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

ROOT = Path(__file__).resolve().parents[1]
LABELS = "negative,neutral,positive"
VOCABULARY = 30_522


@dataclass(frozen=True)
class Size:
    family: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    positions: int = 512


SIZES = {
    "mid": Size("bert", 4, 256, 4, 1024),
    "base": Size("bert", 12, 768, 12, 3072),
    "distil": Size("distil_bert", 6, 768, 12, 3072),
}


@dataclass(frozen=True)
class Imported:
    size: str
    model: str
    folder: str
    parameters: int
    seconds: float
    peak_rss_gib: float
    onnx_bytes: int
    onnx_vs_parameters: float


def vocabulary(size: int = VOCABULARY) -> list[str]:
    """A WordPiece vocabulary of ``size`` tokens: the specials, every character alone and as a ``##`` suffix, then
    every string of two to four letters, alone and as a ``##`` continuation, until the size is reached."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    characters = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = specials + characters + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    common = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "it",
        "that",
        "for",
        "on",
        "with",
        "as",
        "was",
        "be",
        "by",
        "this",
        "are",
        "or",
        "at",
        "from",
        "not",
        "but",
        "good",
        "bad",
        "love",
    ]
    tokens += [w for w in common if w not in tokens]
    seen = set(tokens)
    for length in (2, 3, 4):
        for letters in itertools.product(string.ascii_lowercase, repeat=length):
            for candidate in ("".join(letters), "##" + "".join(letters)):
                if candidate not in seen and len(tokens) < size:
                    tokens.append(candidate)
                    seen.add(candidate)
    return tokens[:size]


def build(size_name: str, out: Path, sequence_length: int = 512) -> tuple[Path, int]:
    """Save the ``size_name`` classifier (3 classes, preprocessor included) as ``out/<size>.keras``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import keras_hub

    size = SIZES[size_name]
    keras.utils.set_random_seed(0)
    vocab = vocabulary()
    shape = dict(num_layers=size.layers, num_heads=size.heads, hidden_dim=size.hidden, intermediate_dim=size.ffn)
    if size.family == "bert":
        tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
        backbone = keras_hub.models.BertBackbone(len(vocab), max_sequence_length=size.positions, **shape)
        preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=sequence_length)
        task = keras_hub.models.BertTextClassifier(backbone, 3, preprocessor=preprocessor)
    else:
        tokenizer = keras_hub.models.DistilBertTokenizer(vocabulary=vocab, lowercase=True)
        backbone = keras_hub.models.DistilBertBackbone(len(vocab), max_sequence_length=size.positions, **shape)
        preprocessor = keras_hub.models.DistilBertTextClassifierPreprocessor(tokenizer, sequence_length=sequence_length)
        task = keras_hub.models.DistilBertTextClassifier(backbone, 3, preprocessor=preprocessor)
    path = out / f"{size_name}.keras"
    task.save(path)
    return path, int(task.count_params())


def measure_import(model: Path, repository: Path, name: str, variants: str = "none") -> tuple[Path, float, float]:
    """Import ``model`` in a child process: its folder, wall seconds and peak resident memory (GiB)."""
    started = time.monotonic()
    command = [sys.executable, "-m", "model_export", "import", str(model), "--labels", LABELS]
    command += ["--repository", str(repository), "--name", name, "--variants", variants]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"import of {model.name} failed: {done.stderr.strip().splitlines()[-1:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB → GiB (the largest child so far)
    return Path(json.loads(done.stdout)["folder"]), seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the .keras files and the repository")
    parser.add_argument("--sizes", default="mid,base", help=f"comma-separated, from {sorted(SIZES)}")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for size_name in [s for s in args.sizes.split(",") if s]:
        model, parameters = build(size_name, args.out)
        folder, seconds, peak = measure_import(model, args.out / "repository", size_name)
        onnx_bytes = (folder / "model.onnx").stat().st_size
        result = Imported(
            size_name, model.name, str(folder), parameters, round(seconds, 1), round(peak, 2), onnx_bytes,
            round(onnx_bytes / (parameters * 4), 4),
        )  # fmt: skip
        results.append(asdict(result))
        print(json.dumps(results[-1]), flush=True)
    (args.out / "imports.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
