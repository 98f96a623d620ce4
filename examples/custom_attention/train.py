"""Train the seed's model (``layers.py``) on the needle task and save what ``import`` needs.

Writes ``model.keras``, ``vocab.txt`` (one token per line, line number = id, ``[PAD]`` and ``[UNK]`` first) and
``data.csv`` (held-out texts with labels, for ``import --data``) into ``--out``. The model has no mask, so it is
trained on batches of equal-length texts, as the service will run it: never padded.

    python examples/custom_attention/train.py --out /tmp/custom_attention
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: layers.py sits beside it

from layers import build_model

from model_export.data import needle_task

SPECIAL = ("[PAD]", "[UNK]")


def words(text: str) -> list[str]:
    """Lowercase, split on whitespace: what ``import --vocab`` does for texts without punctuation."""
    return text.lower().split()


def equal_length_batches(ids: list[list[int]], labels: list[int], size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = []
    for _, group in itertools.groupby(order, key=lambda i: len(ids[i])):
        members = list(group)
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            batches.append((np.array([ids[i] for i in chunk], np.int32), np.array([labels[i] for i in chunk])))
    return batches


def train(out: Path, samples: int = 3000, epochs: int = 6, seed: int = 0) -> keras.Model:
    """Train on ``samples`` needle texts (a fifth held out into data.csv) and save model, vocabulary, data."""
    keras.utils.set_random_seed(seed)
    dataset = needle_task(samples, seed=seed)
    names = dataset.label_names
    split = samples * 4 // 5
    vocab = [*SPECIAL, *sorted({w for text in dataset.texts[:split] for w in words(text)})]
    index = {token: i for i, token in enumerate(vocab)}
    ids = [[index.get(w, 1) for w in words(text)] for text in dataset.texts]
    labels = [names.index(label) for label in dataset.labels]
    model = build_model(len(vocab), len(names))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    batches = equal_length_batches(ids[:split], labels[:split], 32)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for number in rng.permutation(len(batches)):
            model.train_on_batch(*batches[number])
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    with (out / "data.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(dataset.texts[split:], dataset.labels[split:], strict=True))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for model.keras, vocab.txt, data.csv")
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    train(args.out, args.samples, args.epochs)
    print(f"wrote {args.out}/model.keras, vocab.txt, data.csv")


if __name__ == "__main__":
    main()
