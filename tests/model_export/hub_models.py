"""Pretrained-transformer classifiers as ML engineers bring them, built small with random weights (nothing downloaded),
saved the way keras-hub saves them, and imported with no more than ``--labels`` (what ``python -m model_export
import`` runs). For the import and e2e tests.

Kinds and how each arrives:
- ``bert``, ``distil_bert``, ``roberta``, ``albert``: a keras-hub ``*TextClassifier`` saved with its preprocessor
  (``.keras``): WordPiece (lowercase), WordPiece (cased, accents stripped), byte-level BPE, SentencePiece (Unigram).
- ``deberta_v3``: ``DebertaV3TextClassifier`` saved as a keras-hub preset folder (``save_to_preset``).
- ``electra``: an ``ElectraBackbone`` with a ``Dense`` head on position 0 (keras-hub has no ELECTRA classifier), its
  ``ElectraTokenizer`` saved as a preset and given with ``--preprocessor``.
- ``tf_hub_bert``: a BERT SavedModel with TF Hub's input names (``input_word_ids``, ``input_mask``,
  ``input_type_ids``) and its ``vocab.txt`` (``--vocab``).

``HubModel.texts`` / ``pairs`` hold the original's own probabilities for ``TEXTS`` and ``PAIRS`` from the raw
strings, computed before the import: the keras-hub task's ``predict`` (preprocessor included), or the tokenizer,
packer and model as keras-hub runs them; softmax applied to logits. (Computed up front: once a second copy of a
SentencePiece tokenizer is dropped in the same process, TF Text's shared resource of the first is gone too.) The
classifier heads are scaled up so that the probabilities depend on the text.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from model_export.importer import ImportRequest, run_import

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
LABELS = ("entailment", "neutral", "contradiction")
LENGTH = 64
CORPUS = (
    "the service works well and i like it",
    "This is GREAT, really great!",
    "not good at all; bad, bad service",
    "an okay day, nothing more to say",
    "Terrible!!! never again?",
    "I'd use it again: fast, cheap and good",
    "Café naïve résumé — unicode words",
    "the cat sat on the mat",
    "A man is playing a guitar on the stage.",
    "Someone plays an instrument for the people.",
    "Is this the right answer to the question?",
    "numbers like 12345 and 3.14 appear here",
    "東京 is a city, 北京 too 😀",
)
TEXTS = (
    "the service works well",
    "Terrible!!! never again?",
    "A man is playing a guitar on the stage, and the people like it.",
    "Café naïve résumé",
    "ok",
)
PAIRS = (
    ("A man is playing a guitar.", "Someone plays an instrument."),
    ("the cat sat on the mat", "a dog"),
    ("Is this the right answer?", "yes, it is the right answer to the question, really great"),
)
SIZE = {"num_layers": 2, "num_heads": 2, "hidden_dim": 32, "intermediate_dim": 64, "max_sequence_length": LENGTH}


@dataclass(frozen=True)
class HubModel:
    kind: str
    folder: Path
    request: ImportRequest
    texts: np.ndarray  # the original's probabilities for TEXTS
    pairs: np.ndarray  # and for PAIRS
    layers: int
    parameters: int


def _model(
    kind: str,
    request: ImportRequest,
    predict: Callable[[Sequence[str]], np.ndarray],
    predict_pairs: Callable[[Sequence[tuple[str, str]]], np.ndarray],
    layers: int,
    parameters: int,
) -> HubModel:
    texts, pairs = predict(TEXTS), predict_pairs(PAIRS)
    return HubModel(kind, run_import(request), request, texts, pairs, layers, parameters)


def word_pieces(size: int = 600, lowercase: bool = True) -> list[str]:
    """A WordPiece vocabulary trained on the corpus ([PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(CORPUS * 10, trainers.WordPieceTrainer(vocab_size=size, special_tokens=specials))
    return [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]


def byte_pairs() -> tuple[dict[str, int], list[str]]:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials, initial_alphabet=alphabet)
    tokenizer.train_from_iterator(CORPUS * 10, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    return model["vocab"], merges


def sentence_piece(pad: str) -> bytes:
    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 10), model_writer=out, vocab_size=160, model_type="unigram",
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece=pad, unk_piece="<unk>", bos_piece="[CLS]",
        eos_piece="[SEP]", user_defined_symbols=["[MASK]"] if pad == "<pad>" else [], hard_vocab_limit=False,
        minloglevel=2,
    )  # fmt: skip
    return out.getvalue()


def _sharpen(model: keras.Model, name: str) -> None:
    """Scale the classifier's output layer so the probabilities move with the text (random heads are near 0)."""
    layer = model.get_layer(name)
    kernel = layer.kernel
    kernel.assign(kernel * 50.0)


def _softmax(logits: Any) -> np.ndarray:
    values = np.asarray(logits, np.float64)
    values = np.exp(values - values.max(-1, keepdims=True))
    return values / values.sum(-1, keepdims=True)


def _task_model(kind: str, task: Any, request: ImportRequest) -> HubModel:
    def predict(texts: Sequence[str]) -> np.ndarray:
        return _softmax(task.predict(tf.constant(list(texts)), verbose=0))

    def predict_pairs(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        firsts, seconds = tf.constant([p[0] for p in pairs]), tf.constant([p[1] for p in pairs])
        return _softmax(task.predict((firsts, seconds), verbose=0))

    return _model(kind, request, predict, predict_pairs, task.backbone.num_layers, task.count_params())


def _request(model: Path, repository: Path, name: str, **options: Any) -> ImportRequest:
    return ImportRequest(model=model, labels=LABELS, repository=repository, name=name, **options)


def build_task(kind: str, repository: Path, workdir: Path) -> HubModel:
    """A keras-hub text classifier with its preprocessor, saved (``.keras``, or a preset for DeBERTaV3)."""
    import keras_hub

    keras.utils.set_random_seed(1)
    hub = keras_hub.models
    if kind == "bert":
        tokenizer = hub.BertTokenizer(vocabulary=word_pieces(), lowercase=True)
        backbone, classes = hub.BertBackbone(tokenizer.vocabulary_size(), **SIZE), hub.BertTextClassifier
        preprocessor = hub.BertTextClassifierPreprocessor(tokenizer, sequence_length=LENGTH)
    elif kind == "distil_bert":
        tokenizer = hub.DistilBertTokenizer(vocabulary=word_pieces(lowercase=False), strip_accents=True)
        backbone, classes = hub.DistilBertBackbone(tokenizer.vocabulary_size(), **SIZE), hub.DistilBertTextClassifier
        preprocessor = hub.DistilBertTextClassifierPreprocessor(tokenizer, sequence_length=LENGTH)
    elif kind == "roberta":
        vocab, merges = byte_pairs()
        tokenizer = hub.RobertaTokenizer(vocabulary=vocab, merges=merges)
        backbone, classes = hub.RobertaBackbone(len(vocab), **SIZE), hub.RobertaTextClassifier
        preprocessor = hub.RobertaTextClassifierPreprocessor(tokenizer, sequence_length=LENGTH)
    elif kind == "albert":
        tokenizer = hub.AlbertTokenizer(proto=sentence_piece("<pad>"))
        shape = {**SIZE, "embedding_dim": 16, "num_groups": 1, "num_inner_repetitions": 1}
        backbone, classes = hub.AlbertBackbone(tokenizer.vocabulary_size(), **shape), hub.AlbertTextClassifier
        preprocessor = hub.AlbertTextClassifierPreprocessor(tokenizer, sequence_length=LENGTH)
    else:
        tokenizer = hub.DebertaV3Tokenizer(proto=sentence_piece("[PAD]"))
        backbone = hub.DebertaV3Backbone(tokenizer.vocabulary_size(), bucket_size=8, **SIZE)
        classes = hub.DebertaV3TextClassifier
        preprocessor = hub.DebertaV3TextClassifierPreprocessor(tokenizer, sequence_length=LENGTH)
    task = classes(backbone, len(LABELS), preprocessor=preprocessor)
    _sharpen(task, "logits")
    if kind == "deberta_v3":
        path = workdir / kind
        task.save_to_preset(str(path))
    else:
        path = workdir / f"{kind}.keras"
        task.save(path)
    variants = ("int8",) if kind == "bert" else ()  # one family carries the INT8 variant and its lean twin
    return _task_model(kind, task, _request(path, repository, kind, variants=variants))


def build_electra(repository: Path, workdir: Path) -> HubModel:
    """An ELECTRA backbone with a Dense head on position 0; its tokenizer as a preset (``--preprocessor``)."""
    import keras_hub

    keras.utils.set_random_seed(2)
    tokenizer = keras_hub.models.ElectraTokenizer(vocabulary=word_pieces(), lowercase=True)
    shape = {k: v for k, v in SIZE.items()} | {"embedding_dim": 16}
    backbone = keras_hub.models.ElectraBackbone(vocab_size=tokenizer.vocabulary_size(), **shape)
    first = backbone.output["sequence_output"][:, 0, :]
    model = keras.Model(backbone.input, keras.layers.Dense(len(LABELS), activation="softmax", name="head")(first))
    _sharpen(model, "head")
    path, tokenizer_preset = workdir / "electra.keras", workdir / "electra_tokenizer"
    model.save(path)
    tokenizer.save_to_preset(str(tokenizer_preset))
    packer = keras_hub.layers.MultiSegmentPacker(
        sequence_length=LENGTH, start_value=tokenizer.cls_token_id, end_value=tokenizer.sep_token_id
    )

    def run(segments: tuple[Any, ...]) -> np.ndarray:
        ids, segment_ids = packer(tuple(tokenizer(tf.constant(list(s))) for s in segments))
        inputs = {"token_ids": ids, "segment_ids": segment_ids, "padding_mask": ids != 0}
        return np.asarray(model.predict(inputs, verbose=0), np.float64)

    request = _request(path, repository, "electra", preprocessor=tokenizer_preset)
    return _model(
        "electra", request, lambda texts: run((texts,)),
        lambda pairs: run(([p[0] for p in pairs], [p[1] for p in pairs])), backbone.num_layers, model.count_params(),
    )  # fmt: skip


def build_tf_hub_bert(repository: Path, workdir: Path) -> HubModel:
    """A BERT SavedModel with TF Hub's input names and probabilities out, and its WordPiece vocab.txt (``--vocab``)."""
    import keras_hub
    import tensorflow_text as tf_text

    keras.utils.set_random_seed(3)
    vocab = word_pieces()
    backbone = keras_hub.models.BertBackbone(len(vocab), **SIZE)
    head = keras.layers.Dense(len(LABELS), name="head")
    head.build((None, SIZE["hidden_dim"]))
    head.kernel.assign(head.kernel * 50.0)
    names = ("input_word_ids", "input_mask", "input_type_ids")

    @tf.function(input_signature=[tf.TensorSpec((None, None), tf.int32, name=n) for n in names])
    def serve(input_word_ids: tf.Tensor, input_mask: tf.Tensor, input_type_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        inputs = {"token_ids": input_word_ids, "padding_mask": input_mask, "segment_ids": input_type_ids}
        pooled = backbone(inputs, training=False)["pooled_output"]
        return {"probabilities": tf.nn.softmax(head(pooled), axis=-1)}

    module = tf.Module()
    module.backbone, module.head, module.serve = backbone, head, serve
    path = workdir / "tf_hub_bert"
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    (workdir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # The original tokenization: TF Text's BERT tokenizer (lower case, accents stripped), [CLS] a [SEP] b [SEP].
    lookup = tf.lookup.StaticVocabularyTable(
        tf.lookup.KeyValueTensorInitializer(vocab, tf.range(len(vocab), dtype=tf.int64)), num_oov_buckets=1
    )
    bert = tf_text.BertTokenizer(lookup, lower_case=True, token_out_type=tf.int64)
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")

    def run(segments: Sequence[Sequence[str]]) -> np.ndarray:
        rows = []
        for texts in zip(*segments, strict=True):
            ids, types = [cls_id], [0]
            for index, text in enumerate(texts):
                pieces = [int(i) for i in bert.tokenize(tf.constant([text])).merge_dims(1, 2)[0].numpy()]
                ids, types = ids + pieces + [sep_id], types + [index] * (len(pieces) + 1)
            feed = [tf.constant([ids], tf.int32), tf.ones((1, len(ids)), tf.int32), tf.constant([types], tf.int32)]
            rows.append(np.asarray(serve(*feed)["probabilities"], np.float64))
        return np.concatenate(rows)

    request = _request(path, repository, "tf_hub_bert", vocab=workdir / "vocab.txt", max_len=LENGTH)
    return _model(
        "tf_hub_bert", request, lambda texts: run([texts]),
        lambda pairs: run([[p[0] for p in pairs], [p[1] for p in pairs]]), SIZE["num_layers"],
        backbone.count_params() + head.count_params(),
    )  # fmt: skip


TASKS = ("bert", "distil_bert", "roberta", "albert", "deberta_v3")
KINDS = (*TASKS, "electra", "tf_hub_bert")


def build(kind: str, repository: Path, workdir: Path) -> HubModel:
    """Build the model ``kind`` (one of ``KINDS``) and import it into ``repository``."""
    home = workdir / kind
    home.mkdir(parents=True, exist_ok=True)
    if kind == "electra":
        return build_electra(repository, home)
    if kind == "tf_hub_bert":
        return build_tf_hub_bert(repository, home)
    return build_task(kind, repository, home)
