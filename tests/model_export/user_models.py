"""Users' own TensorFlow models, built in seconds and imported into a repository (for the import and e2e tests).

Every builder has the signature ``build_<kind>(repository: Path, workdir: Path) -> UserModel``: it creates a tiny
Keras model (trained briefly where its attention must mean something, untrained where parity is all that
matters), saves it the way a user would (``.keras`` or a SavedModel folder, with its ``tokenizer.json`` or
``vocab.txt``) under ``workdir``, imports it into ``repository`` with ``run_import`` (what
``python -m model_export import`` runs), and returns the version folder with a Keras reference to compare
against. ``build(kind, repository, workdir)`` picks the builder by name; ``KINDS`` lists them.

Kinds, and the signature each import must come out with:
- ``seed``: examples/custom_attention (CustomAttention, named with ``--attention-layer``), trained on the needle
  task; ``--vocab``, ``--custom-objects``, ``--data``. No mask: ``padding: "none"``; received attention, 1 × 1.
- ``mha``: ``input_ids`` + ``attention_mask`` inputs; a MultiHeadAttention nested in a custom block and one on top;
  ``--tokenizer`` (WordPiece). ``padding: "mask"``; received; 2 layers × 2 heads; max length from the position
  embedding.
- ``text_vectorization``: TextVectorization (16 tokens) → Embedding(mask_zero) → keras ``Attention``; the tokenizer
  comes from the layer. ``fixed_length: 16``, ``padding: "pad_id"``; received, 1 × 1.
- ``logits``: Embedding(mask_zero) → MultiHeadAttention → its own pooling attention (a model output) → logits;
  ``--vocab --logits``. ``padding: "pad_id"``; pooling attention; 1 × 2; softmax in the graph.
- ``saved_model``: ``model.export()`` of a model that outputs its MultiHeadAttention scores; ``--vocab``.
  ``padding: "pad_id"`` (measured); received; 1 × 4.
- ``no_attention``: Embedding → Conv1D → max pooling; ``--vocab``. ``padding: "none"``; no attention outputs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops
from tokenizers import Tokenizer

from model_export.data import needle_task
from model_export.importer import ImportRequest, run_import
from model_export.tokenization import train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom_attention"
USER_LAYERS = Path(__file__).with_name("user_layers.py")
CORPUS = (
    "the service works well and i like it",
    "This is GREAT, really great!",
    "not good at all; bad, bad service",
    "an okay day, nothing more to say",
    "Terrible!!! never again?",
    "I'd use it again: fast, cheap and good",
    "café naïve résumé — unicode words",
    "the cat sat on the mat",
)
LABELS3 = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class UserModel:
    """One imported user model.

    ``predict(texts)`` gives the Keras model's probabilities ``[len(texts), classes]``, each text run alone,
    tokenized exactly as the service tokenizes it with the folder's ``tokenizer.json`` (a TextVectorization
    model gets the raw strings instead), softmax applied for a logits model: what the server must answer.
    """

    kind: str
    folder: Path
    model_path: Path
    labels: tuple[str, ...]
    texts: tuple[str, ...]
    request: ImportRequest
    predict: Callable[[Sequence[str]], np.ndarray]
    keras_model: Any  # the Keras model (for saved_model: the loaded serving_default function)


def load_module(name: str, path: Path) -> ModuleType:
    """Run a Python file as module ``name`` (as ``--custom-objects`` does)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def user_layers() -> ModuleType:
    """The custom layers, registered (the same file the builders pass as ``--custom-objects``)."""
    return load_module("tests_user_layers", USER_LAYERS)


def write_vocab(path: Path, texts: Sequence[str]) -> list[str]:
    """A vocabulary file (``[PAD]``, ``[UNK]``, then the lowercased words and punctuation of ``texts``)."""
    pieces = Tokenizer.from_str(_vocab_splitter()).pre_tokenizer
    assert pieces is not None
    words = {w for text in texts for w, _ in pieces.pre_tokenize_str(text.lower())}
    vocab = ["[PAD]", "[UNK]", *sorted(words)]
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return vocab


def _vocab_workspace(workdir: Path, name: str) -> tuple[Path, Path, list[str]]:
    """A model's own folder under ``workdir``, its vocabulary file (from the corpus) and the vocabulary."""
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder, folder / "vocab.txt", write_vocab(folder / "vocab.txt", CORPUS)


def _vocab_splitter() -> str:
    from tokenizers import models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return str(tokenizer.to_str())


def _id_predictor(
    call: Callable[[np.ndarray], Any], folder: Path, max_len: int, logits: bool = False
) -> Callable[[Sequence[str]], np.ndarray]:
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))

    def predict(texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            ids = tokenizer.encode(text).ids[:max_len]  # as the service: the file's own special tokens, if any
            rows.append(_probabilities(call(np.asarray([ids], dtype=np.int32)), logits))
        return np.concatenate(rows)

    return predict


def _probabilities(output: Any, logits: bool) -> np.ndarray:
    values = np.asarray(output, dtype=np.float64)
    if logits:
        values = np.exp(values - values.max(-1, keepdims=True))
        values /= values.sum(-1, keepdims=True)
    return values


def _imported(kind: str, request: ImportRequest, texts: Sequence[str], predict: Any, model: Any) -> UserModel:
    folder = run_import(request)
    return UserModel(kind, folder, request.model, request.labels, tuple(texts), request, predict(folder), model)


def build_seed(repository: Path, workdir: Path) -> UserModel:
    """examples/custom_attention trained for a few seconds on the needle task; --vocab, --custom-objects, --data."""
    train = load_module("custom_attention_train", EXAMPLE / "train.py")
    out = workdir / "seed"
    model = train.train(out, samples=2000, epochs=5)
    request = ImportRequest(
        model=out / "model.keras",
        labels=("a", "b", "c"),
        repository=repository,
        name="seed",
        vocab=out / "vocab.txt",
        attention_layers=("custom_attention",),
        custom_objects=EXAMPLE / "layers.py",
        max_len=64,
        data=out / "data.csv",
    )
    texts = needle_task(8, seed=5).texts
    return _imported("seed", request, texts, lambda folder: _id_predictor(model, folder, 64), model)


def build_mha(repository: Path, workdir: Path) -> UserModel:
    """ids + attention_mask → TokenAndPosition → EncoderBlock (nested MHA) → MHA → masked mean; --tokenizer."""
    custom = user_layers()
    tokenizer = train_tokenizer(list(CORPUS) * 4, vocab_size=200)
    (workdir / "mha").mkdir(parents=True, exist_ok=True)
    tokenizer_path = workdir / "mha" / "tokenizer.json"
    tokenizer_path.write_text(tokenizer.to_str(), encoding="utf-8")
    keras.utils.set_random_seed(1)
    ids = keras.Input((None,), dtype="int32", name="input_ids")
    mask = keras.Input((None,), dtype="int32", name="attention_mask")
    x = custom.TokenAndPosition(tokenizer.get_vocab_size(), 32, 16, name="embed")(ids)
    x = custom.EncoderBlock(16, 2, name="block")(x, mask)
    pairs = ops.cast(ops.expand_dims(mask, 1), "bool")
    x = layers.MultiHeadAttention(2, 8, name="top_mha")(x, x, attention_mask=pairs)
    pooled = custom.MaskedMean(name="mean")(x, mask)
    model = keras.Model([ids, mask], layers.Dense(3, activation="softmax", name="probs")(pooled))
    path = workdir / "mha" / "model.keras"
    model.save(path)
    request = ImportRequest(
        model=path,
        labels=LABELS3,
        repository=repository,
        name="mha",
        tokenizer=tokenizer_path,
        custom_objects=USER_LAYERS,
    )

    def call(row: np.ndarray) -> Any:
        return model([row, np.ones_like(row)])

    return _imported("mha", request, CORPUS, lambda folder: _id_predictor(call, folder, 32), model)


def build_text_vectorization(repository: Path, workdir: Path) -> UserModel:
    """strings → TextVectorization(16 tokens) → Embedding(mask_zero) → keras Attention → mean; no tokenizer given."""
    keras.utils.set_random_seed(2)
    vectorizer = layers.TextVectorization(max_tokens=100, output_sequence_length=16, name="vectorize")
    vectorizer.adapt(list(CORPUS))
    strings = keras.Input((1,), dtype="string", name="text")
    x = layers.Embedding(100, 16, mask_zero=True, name="embedding")(vectorizer(strings))
    x = layers.Attention(name="luong")([x, x])
    x = layers.GlobalAveragePooling1D(name="mean")(x)
    model = keras.Model(strings, layers.Dense(2, activation="softmax", name="probs")(x))
    (workdir / "tv").mkdir(parents=True, exist_ok=True)
    path = workdir / "tv" / "model.keras"
    model.save(path)
    request = ImportRequest(model=path, labels=("no", "yes"), repository=repository, name="text_vectorization")

    def predict(folder: Path) -> Callable[[Sequence[str]], np.ndarray]:
        return lambda texts: np.concatenate([np.asarray(model(tf.constant([[t]])), np.float64) for t in texts])

    return _imported("text_vectorization", request, CORPUS, predict, model)


def build_logits(repository: Path, workdir: Path) -> UserModel:
    """Embedding(mask_zero) → MHA → PoolingAttention (weights are an output) → Dense logits; --vocab --logits."""
    custom = user_layers()
    home, vocab_path, vocab = _vocab_workspace(workdir, "logits")
    keras.utils.set_random_seed(3)
    ids = keras.Input((None,), dtype="int32", name="ids")
    x = layers.Embedding(len(vocab), 16, mask_zero=True)(ids)
    x = layers.MultiHeadAttention(2, 8, name="mha")(x, x)
    pooled, weights = custom.PoolingAttention(name="pool")(x)
    model = keras.Model(ids, [layers.Dense(3, name="logits")(pooled), weights])
    path = home / "model.keras"
    model.save(path)
    request = ImportRequest(
        model=path,
        labels=LABELS3,
        repository=repository,
        name="logits",
        vocab=vocab_path,
        custom_objects=USER_LAYERS,
        logits=True,
        max_len=40,
    )

    def predictor(folder: Path) -> Callable[[Sequence[str]], np.ndarray]:
        return _id_predictor(lambda ids: model(ids)[0], folder, 40, logits=True)

    return _imported("logits", request, CORPUS, predictor, model)


def build_saved_model(repository: Path, workdir: Path) -> UserModel:
    """``model.export()`` of Embedding(mask_zero) → MHA (4 heads, scores returned as an output); --vocab."""
    home, vocab_path, vocab = _vocab_workspace(workdir, "saved")
    keras.utils.set_random_seed(4)
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    x = layers.Embedding(len(vocab), 16, mask_zero=True)(ids)
    x, scores = layers.MultiHeadAttention(4, 4, name="mha")(x, x, return_attention_scores=True)
    x = layers.GlobalAveragePooling1D()(x)
    model = keras.Model(ids, [layers.Dense(3, activation="softmax")(x), scores])
    path = home / "saved_model"
    model.export(str(path), verbose=False)
    request = ImportRequest(
        model=path, labels=LABELS3, repository=repository, name="saved_model", vocab=vocab_path, max_len=40
    )
    served = tf.saved_model.load(str(path)).signatures["serving_default"]

    def call(row: np.ndarray) -> Any:
        return served(token_ids=tf.constant(row))["output_0"]

    return _imported("saved_model", request, CORPUS, lambda folder: _id_predictor(call, folder, 40), served)


def build_no_attention(repository: Path, workdir: Path) -> UserModel:
    """Embedding → Conv1D → global max pooling → softmax: no attention, no mask; --vocab --max-len."""
    home, vocab_path, vocab = _vocab_workspace(workdir, "plain")
    keras.utils.set_random_seed(5)
    ids = keras.Input((None,), dtype="int32", name="ids")
    x = layers.Embedding(len(vocab), 16)(ids)
    x = layers.Conv1D(16, 3, padding="same", activation="relu")(x)
    x = layers.GlobalMaxPooling1D()(x)
    model = keras.Model(ids, layers.Dense(2, activation="softmax")(x))
    path = home / "model.keras"
    model.save(path)
    request = ImportRequest(
        model=path,
        labels=("no", "yes"),
        repository=repository,
        name="no_attention",
        vocab=vocab_path,
        max_len=40,
    )
    return _imported("no_attention", request, CORPUS, lambda f: _id_predictor(model, f, 40), model)


BUILDERS: dict[str, Callable[[Path, Path], UserModel]] = {
    "seed": build_seed,
    "mha": build_mha,
    "text_vectorization": build_text_vectorization,
    "logits": build_logits,
    "saved_model": build_saved_model,
    "no_attention": build_no_attention,
}
KINDS = tuple(BUILDERS)


def build(kind: str, repository: Path, workdir: Path) -> UserModel:
    """Build the user model ``kind`` (one of ``KINDS``) and import it into ``repository``."""
    return BUILDERS[kind](repository, workdir)
